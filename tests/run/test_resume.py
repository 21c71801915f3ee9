"""A run stopped halfway and resumed from its checkpoint continues exactly where it stopped."""
import glob
import json
import os
import subprocess
import sys
import time

import torch as th

from helpers import run_main, sacred_dir
from utils import checkpoint

SETTINGS = ["t_max=300", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=50", "log_interval=50",
            "runner_log_interval=50", "learner_log_interval=50", "save_model_interval=150", "batch_size=4",
            "buffer_size=16", "epsilon_anneal_time=400", "target_update_interval_or_tau=7",
            "save_replay_buffer=True", "use_tensorboard=False"]
FILES = ["agent", "target_agent", "mixer", "target_mixer", "opt", "learner", "run_state", "buffer"]


def load_all(folder, names=FILES):
    """A checkpoint's files (`names`: the buffer is only in a run's latest checkpoint); of its run state all but which
    Sacred run wrote it (another run in each test) and its config."""
    files = {f: th.load(os.path.join(folder, f"{f}.th"), weights_only=True) for f in names}
    files["run_state"].pop("sacred_run", None)
    files["run_state"].pop("config", None)  # the config that trained it: checkpoint_path differs
    return files


def assert_same(a, b, path="checkpoint"):
    if isinstance(a, th.Tensor):
        assert th.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif hasattr(a, "shape"):  # numpy arrays in the RNG state
        assert (a == b).all(), path
    else:
        assert a == b, path


def test_resumed_run_matches_uninterrupted_run(tmp_path, monkeypatch):
    # the matrix game is deterministic, so every difference would come from lost state.
    # A run keeps its replay buffer in its latest checkpoint only: here the full run keeps every checkpoint's, as a
    # run stopped at 155 would have it (test_run_killed_with_sigkill_resumes_exactly stops one for real)
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "drop_older_buffers", lambda path: [])
        run_main(tmp_path / "full", "qmix", "matrix_game", *SETTINGS)
    full_models = glob.glob(str(tmp_path / "full" / "models" / "*"))[0]
    # numbered checkpoints plus the run's config (it rebuilds the agents, e.g. for dataset collection)
    assert sorted(os.listdir(full_models), key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0)) == [
        "5", "155", "305", "config.json"]
    run_main(tmp_path / "resumed", "qmix", "matrix_game", *SETTINGS, f"checkpoint_path={full_models}",
             "load_step=155")
    resumed_models = glob.glob(str(tmp_path / "resumed" / "models" / "*"))[0]
    assert sorted(os.listdir(resumed_models)) == ["305", "config.json"]

    full, resumed = load_all(os.path.join(full_models, "305")), load_all(os.path.join(resumed_models, "305"))
    assert resumed["run_state"]["t_env"] == 305
    # weights, target networks, optimiser moments and step counts, target-update counters, RNG, buffer
    assert_same(full, resumed)
    assert resumed["learner"]["targets"]["updates"] > 0

    # the epsilon schedule continues from t_env, not from zero
    info_full = json.load(open(os.path.join(sacred_dir(tmp_path / "full", "qmix", "penalty"), "info.json")))
    info_res = json.load(open(os.path.join(sacred_dir(tmp_path / "resumed", "qmix", "penalty"), "info.json")))
    eps_full = dict(zip(info_full["epsilon_T"], info_full["epsilon"]))
    eps_res = dict(zip(info_res["epsilon_T"], info_res["epsilon"]))
    assert min(eps_res) > 155 and all(eps_res[t] == eps_full[t] for t in eps_res)
    assert min(eps_res.values()) < 1.0


def test_checkpoint_without_buffer_still_resumes_counters(tmp_path):
    settings = [s for s in SETTINGS if not s.startswith("save_replay_buffer")]
    run_main(tmp_path / "a", "vdn", "matrix_game", *settings)
    models = glob.glob(str(tmp_path / "a" / "models" / "*"))[0]
    run_main(tmp_path / "b", "vdn", "matrix_game", *settings, "t_max=400", f"checkpoint_path={models}")
    resumed = models  # resuming from its latest checkpoint, the run continues in its model folder
    assert not os.path.exists(tmp_path / "b" / "models")
    state = th.load(os.path.join(resumed, "405", "run_state.th"), weights_only=True)
    assert state["loop"]["episode"] == 81  # 61 episodes before the resume (at t_env 305) + 20 after
    assert "buffer" not in state and not os.path.exists(os.path.join(resumed, "405", "buffer.th"))


def test_run_killed_with_sigkill_resumes_exactly(tmp_path):
    """kill -9 (no chance to clean up) after the checkpoint at 155, then resume: same as never stopped."""
    run_main(tmp_path / "full", "qmix", "matrix_game", *SETTINGS)
    settings = [s for s in SETTINGS if not s.startswith("t_max")]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "src/main.py", "--config=qmix", "--env-config=matrix_game", "with",
                             f"local_results_path={killed}", "seed=3", "t_max=100000000", *settings],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not glob.glob(str(killed / "models" / "*" / "155" / "run_state.th")):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its checkpoint at 155"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    killed_models = glob.glob(str(killed / "models" / "*"))[0]
    run_main(tmp_path / "resumed", "qmix", "matrix_game", *SETTINGS, f"checkpoint_path={killed_models}",
             "load_step=155")
    full_models = glob.glob(str(tmp_path / "full" / "models" / "*"))[0]
    # the killed run's folder, or a new one if the kill came after its checkpoint at 305 (resuming from 155 then
    # must not overwrite the later checkpoints)
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "resumed", "qmix", "penalty"), "info.json")))
    resumed_models = info["resumed_from"]["model_dir"]
    assert info["resumed_from"]["same_model_dir"] == (resumed_models == killed_models)
    assert_same(load_all(os.path.join(full_models, "305")), load_all(os.path.join(resumed_models, "305")))
    assert not [d for d in os.listdir(killed_models) if ".tmp" in d]  # a save cut short was cleaned up
