"""Mixer `qllm`: Q_tot from a TFCAF file, the IGM gate, no parameters, and training inside q_learner."""
import copy
import glob
import hashlib
import json
import os
from types import SimpleNamespace

import pytest
import torch

from helpers import make_ctx, run_main, sacred_dir
from modules.mixers import REGISTRY
from modules.mixers import qllm as qllm_module
from qllm import loader
from qllm.loader import TFCAFLoadError
from utils.config import ConfigError, build_config

# weights can be negative: the gate makes a visible difference
SRC = ("import torch\n\ndef tfcaf(state, n_agents):\n"
       "    w = torch.tanh(state[:, :n_agents] - 0.3)\n"
       "    return w, 0.5 * state[:, -1:]\n")
LEGACY = ("import torch\n\ndef QLLMNetwork(agents_q, global_state):\n"
          "    return (torch.softmax(global_state[:, :2], -1) * agents_q).sum(-1, keepdim=True)\n")


def write_tfcaf(folder, source=SRC, **meta):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tfcaf.py").write_text(source)
    (folder / "meta.json").write_text(json.dumps({"sha256": hashlib.sha256(source.encode()).hexdigest(), **meta}))
    return str(folder / "tfcaf.py")


def make_args(path, n_agents=2, **kw):
    return SimpleNamespace(n_agents=n_agents, tfcaf_path=path, **kw)


def test_registered():
    assert REGISTRY["qllm"] is qllm_module.QLLMMixer


@pytest.mark.parametrize("gate", [True, False])
def test_q_tot_shape_gate_and_gradients(tmp_path, gate):
    mixer = REGISTRY["qllm"](make_args(write_tfcaf(tmp_path), igm_gate=gate))
    assert list(mixer.parameters()) == [] and mixer.igm_gate is gate
    qs = torch.randn(3, 5, 2, requires_grad=True)
    states = torch.rand(3, 5, 6)
    q_tot = mixer(qs, states, obs=None, max_qs=None)
    w = torch.tanh(states[..., :2] - 0.3)
    used = w.abs() if gate else w
    assert q_tot.shape == (3, 5, 1)
    assert torch.allclose(q_tot, (used * qs).sum(-1, keepdim=True) + 0.5 * states[..., -1:])
    q_tot.sum().backward()
    assert torch.allclose(qs.grad, used)
    stats = mixer.log_stats()
    assert set(stats) == {"w_mean", "w_std", "w_min", "w_max", "w_neg_frac", "b_mean"}
    assert stats["w_min"] == pytest.approx(float(w.min()), abs=1e-6) and 0 < stats["w_neg_frac"] < 1


def test_gate_defaults_to_the_recorded_setting(tmp_path):
    assert REGISTRY["qllm"](make_args(write_tfcaf(tmp_path / "a", igm_gate=False), igm_gate=None)).igm_gate is False
    assert REGISTRY["qllm"](make_args(write_tfcaf(tmp_path / "b"), igm_gate=None)).igm_gate is True
    assert REGISTRY["qllm"](make_args(write_tfcaf(tmp_path / "c", igm_gate=False), igm_gate=True)).igm_gate is True


def test_stats_use_only_real_transitions(tmp_path):
    mixer = REGISTRY["qllm"](make_args(write_tfcaf(tmp_path), igm_gate=True))
    states = torch.zeros(2, 4, 6)
    states[:, :2, 0] = 1.0  # padded rows are all-zero states
    mask = torch.zeros(2, 4, 1)
    mask[:, :2] = 1
    mixer(torch.randn(2, 4, 2), states, mask=mask)
    assert mixer.log_stats()["w_max"] == pytest.approx(float(torch.tanh(torch.tensor(0.7))), abs=1e-6)


def test_legacy_form(tmp_path):
    mixer = REGISTRY["qllm"](make_args(write_tfcaf(tmp_path, LEGACY)))
    qs = torch.randn(4, 3, 2, requires_grad=True)
    q_tot = mixer(qs, torch.randn(4, 3, 6))
    assert q_tot.shape == (4, 3, 1) and mixer.log_stats() == {}
    q_tot.sum().backward()
    assert qs.grad.abs().sum() > 0


def test_state_dict_copies_and_refuses_another_tfcaf(tmp_path):
    mixer = REGISTRY["qllm"](make_args(write_tfcaf(tmp_path / "a")))
    target = copy.deepcopy(mixer)
    target.load_state_dict(mixer.state_dict())  # hard target update
    sd = mixer.state_dict()
    assert [k for k in sd if not k.endswith("_extra_state")] == []
    other = REGISTRY["qllm"](make_args(write_tfcaf(tmp_path / "b", SRC.replace("0.3", "0.4"))))
    with pytest.raises(TFCAFLoadError, match="resume with the same tfcaf_path"):
        other.load_state_dict(sd)


def test_null_path_uses_the_shipped_reference_for_the_env_config(tmp_path, monkeypatch):
    folder = tmp_path / "tfcafs"
    folder.mkdir()
    (folder / "climbing.py").write_text(SRC)
    (folder / "MANIFEST.json").write_text(json.dumps({"climbing": {
        "file": "climbing.py", "sha256": hashlib.sha256(SRC.encode()).hexdigest(), "igm_gate": False}}))
    monkeypatch.setattr(loader, "TFCAF_DIR", str(folder))
    mixer = REGISTRY["qllm"](make_args(None, env_config="climbing", igm_gate=None))
    assert mixer.tfcaf.path == str(folder / "climbing.py") and mixer.igm_gate is False
    # without env_config (args built elsewhere): the env config with the same env and label
    args = make_args(None, env="matrix_game", env_args={"game": "climbing", "episode_limit": 5})
    assert REGISTRY["qllm"](args).tfcaf.path == str(folder / "climbing.py")
    with pytest.raises(TFCAFLoadError, match="no shipped reference TFCAF for env config 'lbf'"):
        REGISTRY["qllm"](make_args(None, env_config="lbf"))
    monkeypatch.setattr(loader, "TFCAF_DIR", str(tmp_path / "missing"))
    with pytest.raises(TFCAFLoadError, match="MANIFEST.json is missing"):
        REGISTRY["qllm"](make_args(None, env_config="climbing"))


def test_env_config_is_recorded_and_not_settable():
    assert build_config("qllm", "climbing")["env_config"] == "climbing"
    with pytest.raises(ConfigError, match="env_config"):
        build_config("qllm", "climbing", {"env_config": "lbf"})


def test_trains_inside_q_learner_and_logs_weight_stats(tmp_path):
    path = write_tfcaf(tmp_path, SRC)
    ctx = make_ctx("qllm", "climbing", tfcaf_path=path, igm_gate=False, batch_size=4, buffer_size=8,
                   env_args={"episode_limit": 5}, learner_log_interval=0, target_update_interval_or_tau=2,
                   use_cuda=False)
    learner = ctx.learner
    assert learner.mixer.igm_gate is False and list(learner.mixer.parameters()) == []
    before = [p.clone() for p in learner.mac.parameters()]
    for i in range(6):
        ctx.buffer.insert_episode_batch(ctx.runner.run())
        if ctx.buffer.can_sample(4):
            out = learner.train(ctx.buffer.sample(4), t_env=(i + 1) * 5, episode_num=i)
            assert torch.isfinite(torch.tensor(out["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.mac.parameters()))
    info = ctx.sacred_run.info
    assert {"mixer_w_mean", "mixer_w_neg_frac", "mixer_b_mean"} <= set(info) and len(info["mixer_w_mean"]) >= 2
    save = tmp_path / "ckpt"
    save.mkdir()
    learner.save_models(str(save))
    learner.load_models(str(save))


def test_main_with_config_qllm(tmp_path):
    path = write_tfcaf(tmp_path / "tfcaf", SRC)
    run_main(tmp_path, "qllm", "matrix_game", "t_max=60", "env_args.episode_limit=5", "test_nepisode=2",
             "test_interval=30", "log_interval=30", "runner_log_interval=30", "learner_log_interval=30",
             "save_model=False", "batch_size=4", "buffer_size=8", "epsilon_anneal_time=50", f"tfcaf_path={path}",
             "igm_gate=True")
    run_dir = sacred_dir(tmp_path, "qllm", "penalty")
    info = json.load(open(os.path.join(run_dir, "info.json")))
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert "mixer_w_mean" in info and config["env_config"] == "matrix_game" and config["tfcaf_path"] == path
    assert glob.glob(os.path.join(tmp_path, "tb_logs", "*", "events.out.tfevents.*"))


def test_main_refuses_a_tampered_tfcaf(tmp_path, capsys):
    path = write_tfcaf(tmp_path / "tfcaf", SRC)
    with open(path, "a") as f:
        f.write("# edited\n")
    run_main(tmp_path, "qllm", "matrix_game", "t_max=10", f"tfcaf_path={path}", expect=1)
    assert "changed after it was validated" in capsys.readouterr().err


def test_mixer_qllm_drops_into_another_value_based_config(tmp_path):
    """pymarl habit: keep --config=vdn and swap the mixer; the shipped climbing reference is used."""
    run_main(tmp_path, "vdn", "climbing", "mixer=qllm", "t_max=60", "test_interval=30", "test_nepisode=2",
             "log_interval=30", "runner_log_interval=30", "learner_log_interval=30", "batch_size=2",
             "buffer_size=4", "env_args.episode_limit=5", "save_model=False", "use_tensorboard=False")
