"""Mixer `qllm`: Q_tot = sum_i g(w_i) Q_i + b from the batch fields the sandboxed TFCAF worker fills; the IGM gate,
no parameters, training inside q_learner, and the run wiring (signed files, re-validation, shipped references)."""
import copy
import glob
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from helpers import config_args, make_ctx, run_main, sacred_dir
from modules.mixers import BATCH_FIELDS, REGISTRY
from modules.mixers import qllm as qllm_module
from qllm.records import sign_record

# weights can be negative: the gate makes a visible difference (validated with the gate off)
SRC = ("import torch\n\ndef tfcaf(state, n_agents):\n"
       "    w = torch.tanh(state[:, :n_agents] - 0.3)\n"
       "    return w, 0.5 * state[:, -1:]\n")


def write_signed(folder, source=SRC, env_config="matrix_game", igm_gate=False, n_agents=2, state_size=6):
    """A TFCAF file with a record signed by this (test) installation, as validate.py --write-meta writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tfcaf.py").write_text(source)
    digest = hashlib.sha256(source.encode()).hexdigest()
    record = sign_record(sha256=digest, env_config=env_config, igm_gate=igm_gate, form="tfcaf", n_agents=n_agents,
                         state_size=state_size, validation={"ok": True, "stage": "ok"})
    (folder / "meta.json").write_text(json.dumps({"sha256": digest, "validation_record": record}))
    return str(folder / "tfcaf.py")


def test_registered_with_its_batch_fields():
    assert REGISTRY["qllm"] is qllm_module.QLLMMixer
    assert BATCH_FIELDS["qllm"] == ("tfcaf_w", "tfcaf_b")


@pytest.mark.parametrize("gate", [True, False])
def test_q_tot_is_a_gated_weighted_sum_of_plain_tensors(gate):
    mixer = REGISTRY["qllm"](config_args("qllm", n_agents=2, igm_gate=gate, tfcaf_sha256="abc"))
    assert list(mixer.parameters()) == [] and mixer.igm_gate is gate
    qs = torch.randn(3, 5, 2, requires_grad=True)
    w, b = torch.randn(3, 5, 2), torch.randn(3, 5, 1)
    q_tot = mixer(qs, torch.rand(3, 5, 6), tfcaf_w=w, tfcaf_b=b, obs=None, max_qs=None)
    used = w.abs() if gate else w
    assert q_tot.shape == (3, 5, 1) and torch.allclose(q_tot, (used * qs).sum(-1, keepdim=True) + b)
    q_tot.sum().backward()
    assert torch.allclose(qs.grad, used)
    assert set(mixer.log_stats()) == {"w_mean", "w_std", "w_min", "w_max", "w_neg_frac", "b_mean"}
    with pytest.raises(RuntimeError, match="tfcaf_w and tfcaf_b"):
        mixer(qs, torch.rand(3, 5, 6))


def test_stats_use_only_real_transitions():
    mixer = REGISTRY["qllm"](config_args("qllm", n_agents=2, igm_gate=True))
    w = torch.zeros(2, 4, 2)
    w[:, :2] = 0.7
    mask = torch.zeros(2, 4, 1)
    mask[:, :2] = 1
    mixer(torch.randn(2, 4, 2), torch.zeros(2, 4, 6), tfcaf_w=w, tfcaf_b=torch.zeros(2, 4, 1), mask=mask)
    assert mixer.log_stats()["w_min"] == pytest.approx(0.7)


def test_checkpoints_carry_the_function_identity():
    mixer = REGISTRY["qllm"](config_args("qllm", n_agents=2, igm_gate=True, tfcaf_sha256="aaa"))
    target = copy.deepcopy(mixer)
    target.load_state_dict(mixer.state_dict())  # hard target update
    other = REGISTRY["qllm"](config_args("qllm", n_agents=2, igm_gate=True, tfcaf_sha256="bbb"))
    with pytest.raises(ValueError, match="resume with the same tfcaf_path"):
        other.load_state_dict(mixer.state_dict())


def test_the_worker_fills_the_batch_and_q_learner_trains(tmp_path):
    path = write_signed(tmp_path / "tfcaf", env_config="climbing")
    ctx = make_ctx("qllm", "climbing", tfcaf_path=path, igm_gate=None, batch_size=4, buffer_size=8,
                   env_args={"episode_limit": 5}, learner_log_interval=0, target_update_interval_or_tau=2,
                   use_cuda=False)
    learner = ctx.learner
    assert ctx.args.igm_gate is False  # the recorded setting
    assert ctx.features[0].spec.trust == "signed record" and list(learner.mixer.parameters()) == []
    before = [p.clone() for p in learner.mac.parameters()]
    for i in range(6):
        batch = ctx.annotate(ctx.runner.run(), t_env=(i + 1) * 5)
        T = batch.max_t_filled()
        states = batch["state"][:, :T]
        assert torch.allclose(batch["tfcaf_w"][:, :T], torch.tanh(states[..., :2] - 0.3), atol=1e-6)
        assert torch.allclose(batch["tfcaf_b"][:, :T], 0.5 * states[..., -1:], atol=1e-6)
        ctx.buffer.insert_episode_batch(batch)
        if ctx.buffer.can_sample(4):
            out = learner.train(ctx.buffer.sample(4), t_env=(i + 1) * 5, episode_num=i)
            assert np.isfinite(out["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.mac.parameters()))
    info = ctx.sacred_run.info
    assert {"mixer_w_mean", "mixer_w_neg_frac", "mixer_b_mean"} <= set(info) and len(info["mixer_w_mean"]) >= 2
    assert info["tfcaf"]["sha256"] == hashlib.sha256(SRC.encode()).hexdigest()
    assert ctx.features[0].worker.calls == 6
    ctx.features[0].close()


def test_main_with_config_qllm_records_the_function(tmp_path):
    path = write_signed(tmp_path / "tfcaf", env_config="matrix_game", igm_gate=False)
    run_main(tmp_path, "qllm", "matrix_game", "t_max=60", "env_args.episode_limit=5", "test_nepisode=2",
             "test_interval=30", "log_interval=30", "runner_log_interval=30", "learner_log_interval=30",
             "save_model=False", "batch_size=4", "buffer_size=8", "epsilon_anneal_time=50", f"tfcaf_path={path}",
             "igm_gate=False")
    run_dir = sacred_dir(tmp_path, "qllm", "penalty")
    info = json.load(open(os.path.join(run_dir, "info.json")))
    assert "mixer_w_mean" in info and info["tfcaf"]["path"] == path and info["tfcaf"]["trust"] == "signed record"
    assert glob.glob(os.path.join(tmp_path, "tb_logs", "*", "events.out.tfevents.*"))


def test_main_revalidates_a_tampered_file_and_refuses_a_hostile_edit(tmp_path, capsys):
    path = write_signed(tmp_path / "tfcaf", env_config="matrix_game", igm_gate=True)
    with open(path, "a") as f:  # still valid code, but no longer the validated file
        f.write("# edited\n")
    common = ["t_max=20", "env_args.episode_limit=5", "test_nepisode=1", "save_model=False", "batch_size=2",
              "buffer_size=4", "use_tensorboard=False", f"tfcaf_path={path}", "igm_gate=False"]
    run_main(tmp_path / "a", "qllm", "matrix_game", *common)
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "a", "qllm", "penalty"), "info.json")))
    assert info["tfcaf"]["trust"] == "re-validated"
    with open(path, "a") as f:  # now it divides by zero on the all-zero padding state: validation refuses it
        f.write("def helper(x):\n    return x\n")
    hostile = open(path).read().replace("0.5 * state[:, -1:]", "state[:, -1:] / state[:, -1:]")
    with open(path, "w") as f:
        f.write(hostile)
    run_main(tmp_path / "b", "qllm", "matrix_game", *common, expect=1)
    assert "failed validation at the 'finite' check" in capsys.readouterr().err


def test_a_revalidated_function_trains_like_a_signed_one(tmp_path):
    """Validating an unsigned file again samples env states inside the run; the run's own random draws must not
    depend on it: same seed, same function, signed or re-validated -> the same curves."""
    signed = write_signed(tmp_path / "signed", env_config="matrix_game", igm_gate=False)
    unsigned = write_signed(tmp_path / "unsigned", env_config="matrix_game", igm_gate=False)
    with open(unsigned, "a") as f:  # the same function, no longer the signed file
        f.write("# edited\n")
    common = ["t_max=80", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=40", "log_interval=40",
              "runner_log_interval=40", "learner_log_interval=40", "save_model=False", "batch_size=2",
              "buffer_size=8", "use_tensorboard=False", "igm_gate=False", "seed=3"]
    curves = {}
    for name, path in (("signed", signed), ("unsigned", unsigned)):
        run_main(tmp_path / name, "qllm", "matrix_game", *common, f"tfcaf_path={path}")
        info = json.load(open(os.path.join(sacred_dir(tmp_path / name, "qllm", "penalty"), "info.json")))
        curves[name] = (info["tfcaf"]["trust"], [info[k] for k in ("return_mean", "test_return_mean", "loss")])
    assert curves["signed"][0] == "signed record" and curves["unsigned"][0] == "re-validated"
    assert curves["signed"][1] == curves["unsigned"][1]


def test_mixer_qllm_drops_into_another_value_based_config(tmp_path):
    """pymarl habit: keep --config=vdn and swap the mixer; the shipped climbing reference is used."""
    run_main(tmp_path, "vdn", "climbing", "mixer=qllm", "t_max=60", "test_interval=30", "test_nepisode=2",
             "log_interval=30", "runner_log_interval=30", "learner_log_interval=30", "batch_size=2",
             "buffer_size=4", "env_args.episode_limit=5", "save_model=False", "use_tensorboard=False")
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "vdn", "climbing"), "info.json")))
    assert info["tfcaf"]["trust"] == "shipped reference" and info["tfcaf"]["path"].endswith("climbing.py")


def test_a_restored_replay_buffer_gets_its_tfcaf_fields_recomputed(tmp_path):
    """A buffer saved by a checkpoint of another version (no tfcaf fields: zeros after loading) is refilled from
    the worker on resume, so the learner never trains on zero weights."""
    import logging

    from run.online import refill_fields

    path = write_signed(tmp_path / "tfcaf", env_config="climbing")
    ctx = make_ctx("qllm", "climbing", tfcaf_path=path, igm_gate=False, batch_size=2, buffer_size=40,
                   env_args={"episode_limit": 5}, use_cuda=False)
    try:
        for i in range(35):
            ctx.buffer.insert_episode_batch(ctx.annotate(ctx.runner.run(), t_env=i))
        n = ctx.buffer.episodes_in_buffer
        expected = ctx.buffer["tfcaf_w"][:n].clone()
        ctx.buffer.data.transition_data["tfcaf_w"][:n] = 0  # what loading an older buffer leaves
        refill_fields(ctx, logging.getLogger("test"))
        assert torch.equal(ctx.buffer["tfcaf_w"][:n], expected) and expected.abs().sum() > 0
        state = ctx.buffer.state_dict()
        state["transition_data"]["made_up"] = state["transition_data"]["reward"]
        with pytest.raises(ValueError, match="fields this run's buffer lacks: \\['made_up'\\]"):
            ctx.buffer.load_state_dict(state)
    finally:
        ctx.features[0].close()
