"""Small builders shared by tests: args namespaces, a fake Sacred run, a countdown env."""
import glob
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from envs import REGISTRY as env_REGISTRY
from envs.multiagentenv import MultiAgentEnv
from main import main
from run.setup import build
from utils.config import build_config
from utils.signals import STOPPING

# keys the code sets on args itself, after the config is merged (not user settings; no YAML defines them)
RUNTIME_KEYS = {
    "n_agents", "n_actions", "state_shape", "obs_shape", "episode_limit",  # from the env (run.setup.build)
    "device", "unique_token", "results_dir", "model_dir",  # run.setup.make_args / build
    "env_config",  # utils.config.build_config: which env config the run uses
    "tfcaf_sha256",  # qllm.features: the identity of the TFCAF the run trains with
}


def config_args(alg="qmix", env="matrix_game", **overrides):
    """An args namespace as a run's, for tests that build modules directly: the merged YAML config of `alg` x `env`
    with `overrides` (checked as `with` overrides are: an unknown key is an error), plus the runtime keys given
    (n_agents, n_actions, state_shape, obs_shape, ...: RUNTIME_KEYS)."""
    runtime = {k: overrides.pop(k) for k in list(overrides) if k in RUNTIME_KEYS}
    return SimpleNamespace(**{**build_config(alg, env, overrides), **runtime})


class FakeSacredRun:
    def __init__(self):
        self.info = {}
        self.scalars = []

    def log_scalar(self, key, value, t):
        self.scalars.append((key, value, t))


class CountdownEnv(MultiAgentEnv):
    """Deterministic test env: ends with a true terminal after `terminal_at` steps (if set), else by time limit.
    The state encodes the step count so tests can check what was stored where."""

    def __init__(self, episode_limit=6, terminal_at=None, n_agents=2, n_actions=3, seed=None, **reward_settings):
        self.n_agents, self.n_actions, self.episode_limit = n_agents, n_actions, episode_limit
        self.terminal_at = terminal_at
        self.t = 0

    def reset(self):
        self.t = 0
        return self.get_obs(), self.get_state()

    def step(self, actions):
        self.t += 1
        if self.terminal_at is not None and self.t >= self.terminal_at:
            return 1.0, True, {"won": 1}
        if self.t >= self.episode_limit:
            return 1.0, False, {"episode_limit": True, "won": 0}
        return 1.0, False, {}

    def get_obs(self):
        return [np.full(2, self.t, dtype=np.float32) for _ in range(self.n_agents)]

    def get_obs_size(self):
        return 2

    def get_state(self):
        return np.array([self.t], dtype=np.float32)

    def get_state_size(self):
        return 1

    def get_avail_actions(self):
        # action 0 is unavailable for agent 1: runners must never pick it
        return [[1] * self.n_actions, [0] + [1] * (self.n_actions - 1)][: self.n_agents]

    def get_total_actions(self):
        return self.n_actions


env_REGISTRY["countdown"] = CountdownEnv


def make_ctx(alg="qmix", env_config="matrix_game", **overrides):
    """Build a run context (runner, buffer, mac, learner) as run_online would, without Sacred.
    An `env` override replaces the env and its env_args (test envs take other arguments)."""
    env = overrides.pop("env", None)
    env_args = overrides.pop("env_args", None)
    config = build_config(alg, env_config, overrides)
    if env is not None:
        config["env"], config["env_args"] = env, dict(env_args or {})
    elif env_args:
        config["env_args"].update(env_args)
    config["env_args"]["seed"] = config["seed"]
    config.setdefault("seed", 0)
    config["use_tensorboard"] = False
    run = FakeSacredRun()
    ctx = build(run, config, logging.getLogger("test"))
    ctx.sacred_run = run
    return ctx


def write_random_dataset(path, env_config="climbing", n_episodes=8, qualities="random", **overrides):
    """An HDF5 dataset of `n_episodes` episodes of uniformly random actions (a tiny fixture for offline learners).
    Returns (path, ctx) where ctx is the run context that collected it."""
    from offline import DatasetWriter
    ctx = make_ctx("qmix", env_config, epsilon_start=1.0, epsilon_finish=1.0, **overrides)
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        for _ in range(n_episodes):
            w.add(ctx.runner.run(test_mode=False), qualities=qualities)
    ctx.runner.close_env()
    return path, ctx


def constant_climbing_episodes(n, a0, a1, limit=25):
    """Dataset arrays of n climbing episodes in which both agents always play (a0, a1): obs/state = one-hot of the
    last joint action (zeros at the first step), the team payoff every step, time-limit end."""
    payoff = [[11, -30, 0], [-30, 7, 6], [0, 0, 5]][a0][a1]
    state = np.zeros((n, limit + 1, 6), np.float32)
    state[:, 1:, a0] = state[:, 1:, 3 + a1] = 1
    reward = np.zeros((n, limit + 1, 1), np.float32)
    reward[:, :limit] = payoff
    return {"obs": np.repeat(state[:, :, None], 2, axis=2), "state": state, "reward": reward,
            "actions": np.tile(np.array([a0, a1]).reshape(1, 1, 2, 1), (n, limit + 1, 1, 1)),
            "avail_actions": np.ones((n, limit + 1, 2, 3), np.uint8),
            "terminated": np.zeros((n, limit + 1, 1), np.uint8), "filled": np.ones((n, limit + 1, 1), np.uint8)}


def run_main(tmp_path, alg, env, *updates, expect=0):
    """Run src/main.py in-process with results under tmp_path."""
    argv = ["main.py", f"--config={alg}", f"--env-config={env}", "with", f"local_results_path={tmp_path}", "seed=3",
            *updates]
    assert main(argv) == expect


SRC_MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "main.py")


def sigint_as_in_a_terminal():
    """preexec_fn for a child that is sent Ctrl-C or SIGTERM: both with their default action, as a terminal leaves
    them (pytest itself may run with SIGINT ignored, in the background or under CI, and a child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def ctrl_c_run(tmp_path, alg, env, *updates, ready, presses=1, timeout=120, sig=signal.SIGINT):
    """Run src/main.py (as run_main does) in a process group of its own and press Ctrl-C as a terminal does (SIGINT
    to the whole group, parallel-runner workers included) once `ready(console so far)` is true; `presses` times, the
    later ones after the run said it took the first ("Ctrl-C: stopping after ..."): two signals pending together
    would count as one. sig=SIGTERM: sent to the group as `timeout` and a scheduler's cancel send it. Returns (exit
    status, console)."""
    os.makedirs(tmp_path, exist_ok=True)
    log_path = os.path.join(tmp_path, "main.log")
    cmd = [sys.executable, SRC_MAIN, f"--config={alg}", f"--env-config={env}", "with",
           f"local_results_path={tmp_path}", "seed=3", *updates]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=sigint_as_in_a_terminal)
    deadline = time.time() + timeout

    def wait_for(condition, what):
        while not condition(open(log_path).read()):
            assert proc.poll() is None, f"the run ended {what}:\n{open(log_path).read()[-3000:]}"
            assert time.time() < deadline, f"the run never got {what}"
            time.sleep(0.01)

    try:
        wait_for(ready, "ready for Ctrl-C")
        for i in range(presses):
            if i:
                wait_for(lambda console: f"{STOPPING[sig]}: stopping after" in console, "to take the first signal")
            os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, open(log_path).read()


def run_main_concurrently(runs):
    """Run src/main.py once per `(tmp_path, alg, env, *updates)` of `runs` (as run_main does), all at once in
    separate processes, so a learning check's seeds share both cores; every run must exit 0 (its log tail is in the
    assertion message otherwise; the full log is tmp_path/main.log)."""
    procs = []
    for tmp_path, alg, env, *updates in runs:
        os.makedirs(tmp_path, exist_ok=True)
        log = open(os.path.join(tmp_path, "main.log"), "w")
        cmd = [sys.executable, SRC_MAIN, f"--config={alg}", f"--env-config={env}", "with",
               f"local_results_path={tmp_path}", "seed=3", *updates]
        procs.append((tmp_path, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for tmp_path, log, proc in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            with open(os.path.join(tmp_path, "main.log")) as f:
                failed.append(f"{tmp_path}: exit {proc.returncode}\n" + f.read()[-2000:])
    assert not failed, "\n\n".join(failed)


def run_without(package, code):
    """Run `code` in a fresh Python (src on the path) where importing `package` fails as if it were not installed
    (an import hook: the module under test stays as it is); the CompletedProcess, output as text."""
    hook = ("import sys\n"
            "class Missing:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.partition('.')[0] == {package!r}:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Missing())\n")
    src = os.path.dirname(SRC_MAIN)
    return subprocess.run([sys.executable, "-c", hook + code], cwd=os.path.dirname(src), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": src})


def sacred_dir(tmp_path, name, env_label):
    dirs = glob.glob(os.path.join(tmp_path, "sacred", name, env_label, "[0-9]*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def require_extra(module, install):
    """Skip when an optional extra is missing, except in CI (CI=true), which installs every extra: there a
    missing extra must fail, so its tests never pass by being skipped."""
    if importlib.util.find_spec(module) is None:
        require_nothing_missing([f"optional extra '{module}' is not installed"], install)


def local_llm_problems():
    """What keeps the local model from running here: [] when its runtime and model file are installed."""
    from llm import default_model_path
    problems = []
    if importlib.util.find_spec("xllamacpp") is None:
        problems.append("xllamacpp is not installed")
    if not os.path.isfile(default_model_path()):
        problems.append(f"the model file {default_model_path()} is missing")
    return problems


def require_local_llm():
    """The local model file and its runtime (./install.sh llm), under the same skip-or-fail rule."""
    require_nothing_missing(local_llm_problems(), "./install.sh llm, or python scripts/setup_local.py")


def require_nothing_missing(problems, install):
    if not problems:
        return
    message = f"{'; '.join(problems)} ({install})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}, but CI must run these tests", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def install_record_v1(tmp_path, monkeypatch, name="v1"):
    """tests/qllm/data/record_v1 (a TFCAF, its meta.json and the test-only key that signed it, written by the code
    before issue 11) copied to tmp_path/<name>, with its key installed as this installation's: returns the folder."""
    import shutil

    from qllm import records

    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qllm", "data", "record_v1")
    key_dir = tmp_path / "config" / "llm-pymarl"
    key_dir.mkdir(parents=True)
    shutil.copy(os.path.join(data, "test_only_validator.key"), key_dir / records.KEY_FILE)
    os.chmod(key_dir / records.KEY_FILE, 0o600)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    folder = tmp_path / name
    shutil.copytree(data, folder, ignore=shutil.ignore_patterns("*.key"))
    return folder


def assert_tables_well_formed(markdown):
    """Every row of every markdown table in `markdown` has its header's number of cells (bench reports)."""
    cells_per_row = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            cells_per_row = None
        elif cells_per_row is None:
            cells_per_row = line.count("|")
        else:
            assert line.count("|") == cells_per_row, line
