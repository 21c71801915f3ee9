"""Hostile TFCAFs (issue 10), through the real generation path (loopback OpenAI-compatible server, real `openai`
client, sandbox validation) and straight into training with `tfcaf_path=` and a forged record.

Two kinds: functions the policy or the validator refuse (never trained with), and functions that pass validation
and misbehave only later, in training (here: when a call holds exactly 6 states, one matrix-game episode of
episode_limit 5, a batch size validation never uses). The second kind runs in the sandboxed worker and stops the
run with an error naming the state, the step and the function's hash. Throughout: no file appears outside the
run, no secret reaches any file, the host's torch RNG, thread count and module dicts are unchanged, and the host
process survives.
"""
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import make_ctx, run_main
from qllm.validate import ValidationContext, validate_source
from qllm.worker import TFCAFWorker, TFCAFWorkerError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "llm"))
from loopback_server import LoopbackServer, reply  # noqa: E402

SECRET = "sk-hostile-test-0123456789abcdef"
CANARY_DIR = f"/tmp/llm_pymarl_canary_{os.getpid()}"


def fn(body, header=""):
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"import torch\nimport torch.nn.functional as F\n{header}\n\ndef tfcaf(state, n_agents):\n{lines}\n"


OK_TAIL = "return torch.ones(state.shape[0], n_agents, dtype=state.dtype), state[:, :1] * 0.0"

# refused before training: by the static policy (P) or by a sandboxed validation check (V)
REFUSED = {
    "torchscript file write (P)": fn(f"cu = torch.CompilationUnit('def f(x):\\n    torch.save(x, "
                                     f"\"{CANARY_DIR}/a\")')\n{OK_TAIL}"),
    "jit script (P)": fn(f"g = torch.jit.script(lambda x: x)\n{OK_TAIL}"),
    "file-backed tensor read (P)": fn(f"t = torch.from_file('/etc/hostname', size=4)\n{OK_TAIL}"),
    "buffer-backed constructor (P)": fn(f"t = torch.frombuffer(b'constant', dtype=torch.uint8)\n{OK_TAIL}"),
    "storage access (P)": fn(f"s = state.untyped_storage()\n{OK_TAIL}"),
    "sparse out-of-bounds (P)": fn(f"t = torch.sparse_coo_tensor([[10**9]], [1.0], (2,)).to_dense()\n{OK_TAIL}"),
    "autograd graph walk (P)": ("import torch\ndef QLLMNetwork(agents_q, global_state):\n"
                                "    agents_q.grad_fn.next_functions[0][0].variable.data.fill_(float('nan'))\n"
                                "    return agents_q.sum(-1, keepdim=True)\n"),
    "in-place on input (P)": fn(f"state.mul_(0)\n{OK_TAIL}"),
    "mutable default counter (P)": fn(f"calls.append(1)\n{OK_TAIL}").replace("n_agents):", "n_agents, calls=[]):", 1),
    "module-level object (P)": fn(OK_TAIL, header="CALLS = []"),
    "module-level nn.Linear (P)": fn(OK_TAIL, header="LIN = torch.nn.Linear(2, 2)"),
    "decorated (P)": fn(OK_TAIL).replace("def tfcaf", "@torch.no_grad()\ndef tfcaf"),
    "global RNG (P)": fn("w = torch.softmax(torch.randn(state.shape[0], n_agents), -1)\n"
                         "return w, state[:, :1] * 0.0"),
    "reseed (P)": fn(f"torch.manual_seed(0)\n{OK_TAIL}"),
    "thread count (P)": fn(f"torch.set_num_threads(1)\n{OK_TAIL}"),
    "module dict mutation (P)": fn(f"F.softmax = None\n{OK_TAIL}"),
    "device branch (P)": fn("scale = 1.0 if state.is_cpu else float('nan')\n"
                            "return torch.ones(state.shape[0], n_agents) * scale, state[:, :1] * 0.0"),
    "os via torch (P)": fn(f"torch.os.system('touch {CANARY_DIR}/b')\n{OK_TAIL}"),
    "env secret (P)": fn(f"k = torch.os.environ['OPENAI_API_KEY']\n{OK_TAIL}"),
    "nan on zero state (V)": fn("w = state[:, :n_agents] / state.sum(-1, keepdim=True)\nreturn w, state[:, :1]"),
    "not linear legacy (V)": ("import torch\ndef QLLMNetwork(agents_q, global_state):\n"
                              "    return (agents_q ** 2).sum(-1, keepdim=True)\n"),
    "memory bomb (V)": fn("big = torch.ones(2 ** 34)\nreturn torch.ones(state.shape[0], n_agents) + big[0], "
                          "state[:, :1] * 0.0"),
}

# pass validation, misbehave in training: on Two-Switch states at one time step (time_fraction = T/100) that the
# 32 validation states of the generation do not contain; every training episode passes through it. The function
# is always called on batches of 64 states (padded), so the batch size cannot tell validation from training.
def at_step(t):
    return f"hit = (state[:, -1:] - {t / 100:.2f}).abs() < 1e-3"


LATE = {  # name: (body using `hit`, message in the run's error)
    "nan after validation": ("w = torch.where(hit, float('nan'), 1.0).expand(-1, n_agents)", "NaN or inf"),
    "hang after validation": ("w = torch.ones(state.shape[0], n_agents)\n"
                              "for i in range(10 ** 10 if bool(hit.any()) else 1):\n    w = w * 1.0",
                              "no answer within 3 s"),
    "allocation after validation": ("w = torch.ones(state.shape[0], n_agents)\nif bool(hit.any()):\n"
                                    "    w = w + torch.ones(2 ** 34)[0]", "raised an error"),
    "negative weights after validation": ("w = torch.where(hit, -1.0, 1.0).expand(-1, n_agents)",
                                          "negative weights"),
    "wrong shape after validation": ("w = torch.ones(state.shape[0], n_agents)\nif bool(hit.any()):\n"
                                     "    w = w[:, :1]", "weights have shape \\[64, 1\\]"),
}


def late_source(name, t):
    body, _ = LATE[name]
    return fn(f"{at_step(t)}\n{body}\nreturn w, state[:, :1] * 0.0")


def unseen_step():
    """A time step (in 10..90) that the generation's 32 validation states (seed 3, as run_main) do not hold."""
    from qllm.states import sample_states
    from utils.config import build_config

    config = build_config("qllm", "two_switch", {})
    states = sample_states(config["env"], config["env_args"], n=32, seed=3)
    seen = set(np.round(states[:, -1] * 100).astype(int).tolist())
    return next(t for t in range(10, 91) if t not in seen)


TRAIN = ["t_max=40", "env_args.episode_limit=5", "test_nepisode=1", "test_interval=1000", "save_model=False",
         "batch_size=2", "buffer_size=4", "use_tensorboard=False", "igm_gate=True", "tfcaf_timeout_s=3"]


def host_state():
    """What a TFCAF must never change in the training process."""
    return (torch.random.get_rng_state().clone(), torch.get_num_threads(),
            {name: dict(vars(m)) for name, m in (("torch", torch), ("F", F), ("linalg", torch.linalg))})


def assert_host_unchanged(before, rng=True):
    """`rng=False` across whole runs: a run seeds torch's RNG itself (Sacred's seed), so only in-process
    checks around validation and worker calls can compare it."""
    now, threads, dicts = host_state()
    assert threads == before[1] and (not rng or torch.equal(now, before[0]))
    for name, d in dicts.items():
        old = before[2][name]
        assert d.keys() == old.keys() and all(d[k] is old[k] for k in d), name


def assert_no_leaks(folder):
    assert not os.path.exists(CANARY_DIR)
    for path in glob.glob(os.path.join(str(folder), "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                assert SECRET.encode() not in f.read(), path


def forged(folder, source, env_config="matrix_game", n_agents=2, state_size=6):
    """A file with a hand-made record: its hash and a signature made without this installation's key."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tfcaf.py").write_text(source)
    digest = hashlib.sha256(source.encode()).hexdigest()
    record = {"sha256": digest, "policy_version": 2, "env_config": env_config, "igm_gate": True, "form": "tfcaf",
              "n_agents": n_agents, "state_size": state_size, "validation": {"ok": True}, "signature": "0" * 64}
    (folder / "meta.json").write_text(json.dumps({"file": "tfcaf.py", "sha256": digest, "validation_record": record}))
    return str(folder / "tfcaf.py")


def generate(tmp_path, answers, monkeypatch, expect=0, env_config="matrix_game", label="penalty"):
    """qllm_generate against the loopback server answering `answers` (one request, all candidates at once)."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with LoopbackServer(require_key=SECRET) as srv:
        srv.push(reply(*[f"```python\n{a}```" for a in answers]), *[reply("1")] * 3)
        extra = ["env_args.episode_limit=5"] if env_config == "matrix_game" else []
        run_main(tmp_path, "qllm_generate", env_config, "llm.backend=openai", f"llm.base_url={srv.base_url}",
                 "llm.model=scripted", f"llm.cache_dir={tmp_path / 'cache'}", "llm.max_retries=0",
                 f"tfcaf_candidates={len(answers)}", "tfcaf_rounds=1", "tfcaf_max_repairs=0", "tfcaf_states=32",
                 *extra, expect=expect)
    return glob.glob(str(tmp_path / "tfcafs" / label / "*" / "tfcaf.py"))


def test_refused_functions_never_come_out_of_generation(tmp_path, monkeypatch):
    before = host_state()
    assert generate(tmp_path, list(REFUSED.values()), monkeypatch, expect=1) == []
    (failed,) = glob.glob(str(tmp_path / "tfcafs" / "penalty" / "*.failed"))  # one JSON record, no folder
    assert os.listdir(tmp_path / "tfcafs" / "penalty") == [os.path.basename(failed)]
    record = json.load(open(failed))
    assert record["why"] == "no candidate passed validation"
    assert record["llm_calls"]  # the hostile answers did arrive over the wire
    assert_no_leaks(tmp_path)
    assert_host_unchanged(before, rng=False)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_functions_never_train_with_a_forged_record(tmp_path, name, capsys):
    path = forged(tmp_path / "tfcaf", REFUSED[name])
    before = host_state()
    run_main(tmp_path / "run", "qllm", "matrix_game", f"tfcaf_path={path}", *TRAIN, expect=1)
    err = capsys.readouterr().err
    assert "violates the TFCAF policy" in err if "(P)" in name else "failed validation" in err, err[-2000:]
    assert not glob.glob(str(tmp_path / "run" / "models" / "*"))
    assert_no_leaks(tmp_path)
    assert_host_unchanged(before, rng=False)


@pytest.mark.parametrize("name", sorted(LATE))
def test_late_misbehaviour_stops_the_run_naming_state_step_and_hash(tmp_path, name, capsys, monkeypatch):
    t = unseen_step()
    source, message = late_source(name, t), LATE[name][1]
    # through generation: the function passes every validation check and is signed
    (path,) = generate(tmp_path / "gen", [source], monkeypatch, env_config="two_switch", label="two_switch")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    train = ["t_max=150", "test_nepisode=1", "test_interval=100000", "save_model=False", "batch_size=2",
             "buffer_size=4", "use_tensorboard=False", "igm_gate=True", "tfcaf_timeout_s=3"]
    run_main(tmp_path / "generated", "qllm", "two_switch", f"tfcaf_path={path}", *train, expect=1)
    err = capsys.readouterr().err
    assert re_search(message, err) and re_search(r"at t_env \d+", err) and digest[:16] in err, err[-3000:]
    if message in ("NaN or inf", "negative weights"):  # per-state findings name the state's place in the batch
        assert f"episode 0 of the batch, time step {t}:" in err, err[-3000:]
    # with a forged record it is validated again, on 512 states of the run's env: refused there or, if that
    # sample misses the step too, stopped in training as above; it never completes
    forged_path = forged(tmp_path / "forged", source, env_config="two_switch", n_agents=2, state_size=24)
    run_main(tmp_path / "forged_run", "qllm", "two_switch", f"tfcaf_path={forged_path}", *train, expect=1)
    err = capsys.readouterr().err
    assert "failed validation" in err or re_search(message, err), err[-3000:]
    assert_no_leaks(tmp_path)


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


def test_the_host_is_untouched_by_validation_and_training_steps(tmp_path):
    """In-process: validation of every hostile function and training steps with a late-misbehaving one leave the
    host's RNG, threads and torch module dicts as they were; an in-place write never reaches the learner's batch."""
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    ctx_v = ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True, time_limit_s=5)
    before = host_state()
    for name, source in REFUSED.items():
        if "(V)" in name:
            assert not validate_source(source, ctx_v).ok, name
    path = forged(tmp_path / "plain", fn(OK_TAIL))
    ctx = make_ctx("qllm", "matrix_game", tfcaf_path=path, igm_gate=True, batch_size=2, buffer_size=4,
                   env_args={"episode_limit": 5}, use_cuda=False)
    assert ctx.features[0].spec.trust == "re-validated"
    for i in range(3):
        batch = ctx.runner.run()  # acting draws from the RNG itself: compare around the TFCAF's part only
        state = batch["state"].clone()
        before = host_state()
        ctx.annotate(batch, t_env=i)
        assert_host_unchanged(before)
        assert torch.equal(batch["state"], state) and batch.max_t_filled() == 6
        ctx.buffer.insert_episode_batch(batch)
    out = ctx.learner.train(ctx.buffer.sample(2), t_env=10, episode_num=3)
    assert np.isfinite(out["loss"])
    ctx.features[0].close()
    # a write into its input (unvalidated, straight into a worker) changes only the worker's copy, and is an error
    writer = TFCAFWorker(fn("state[:, 0] = 1e6\n" + OK_TAIL), form="tfcaf", n_agents=2, sha256="w", igm_gate=True)
    states = np.ones((6, 6), dtype=np.float32)
    with pytest.raises(TFCAFWorkerError, match="modified its input"):
        writer.evaluate(states)
    assert (states == 1).all()


def slow_worker(monkeypatch, grace_s, loops):
    """A worker of a function that loops `loops` (an expression in `state`) times per call, with STALL_GRACE_S set."""
    import qllm.worker as worker_module

    monkeypatch.setattr(worker_module, "STALL_GRACE_S", grace_s)
    source = fn(f"w = torch.ones(state.shape[0], n_agents)\nfor i in range({loops}):\n    w = w * 1.0\n"
                f"return w, state[:, :1] * 0.0")
    return TFCAFWorker(source, form="tfcaf", n_agents=2, sha256="slow", igm_gate=True), np.ones((6, 6), np.float32)


def test_a_function_that_turns_slow_in_training_is_stopped(monkeypatch):
    """Answers just under the time-out would make training crawl: over 20 answers the worker allows 20 times the
    validation speed limit, then stops the run (the median's check: the stall budget, tested below, is off here)."""
    worker, states = slow_worker(monkeypatch, 1e9, "120000")
    with pytest.raises(TFCAFWorkerError, match="has become too slow"):
        for _ in range(40):
            worker.evaluate(states)
    assert 20 <= worker.calls < 40


def test_a_function_slow_on_a_minority_of_states_is_stopped(monkeypatch):
    """Red-team finding: slow on one answer in four (the median stays fast) stalled training unnoticed, up to the
    time-out per answer. The run's time in the function is now budgeted: 1 ms a state on average plus a grace."""
    from qllm.worker import SLOW_MS_PER_STATE

    worker, states = slow_worker(monkeypatch, 0.5, "int((state[:, 0] > 5).any()) * 400000")
    with pytest.raises(TFCAFWorkerError, match="has spent .* s on .* states so far"):
        for i in range(16):  # 1 s in four answers against 0.5 s of grace and 0.5 s of their budget: stops by the 8th
            worker.evaluate(states + 10 * (i % 4 == 3))
    assert worker.calls < 16
    assert sorted(worker._recent)[len(worker._recent) // 2] < SLOW_MS_PER_STATE  # the median is fast


def test_the_worker_dies_with_a_killed_training_process(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src", "main.py")
    proc = subprocess.Popen([sys.executable, src, "--config=qllm", "--env-config=matrix_game", "with",
                             f"local_results_path={tmp_path}", "t_max=100000000", "save_model=False",
                             "use_tensorboard=False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = None
        deadline = time.monotonic() + 120
        while worker is None and time.monotonic() < deadline:
            time.sleep(0.5)
            worker = next((pid for pid in _children_cmdline("qllm.worker_child") if _ppid(pid) == proc.pid), None)
        assert worker is not None, "the TFCAF worker never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"TFCAF worker {worker} outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def _children_cmdline(marker):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        yield int(entry)
            except OSError:
                continue


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().split(")")[-1].split()[1])
    except OSError:
        return None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("rows", [64, 128])
def test_a_first_request_of_whole_chunks_is_answered(rows):
    """Review finding: with no earlier states and nothing to fill, the second asking once failed to build."""
    worker = TFCAFWorker(fn(OK_TAIL), form="tfcaf", n_agents=2, sha256="whole", igm_gate=True)
    try:
        w, _ = worker.evaluate(np.random.default_rng(rows).normal(size=(rows, 6)).astype(np.float32))
        assert w.shape == (rows, 2) and (w == 1).all()
    finally:
        worker.close()


def test_the_function_only_ever_sees_batches_of_64_states():
    """Red-team finding: a function keyed on the batch size (validation used 513, 1, 9 and 4096 states, training
    one episode) could behave in validation only. Both now call it on padded batches of exactly 64 states."""
    from qllm.runtime import CHUNK_ROWS

    probe = fn("w = torch.full((state.shape[0], n_agents), float(state.shape[0]))\nreturn w, state[:, :1] * 0.0")
    worker = TFCAFWorker(probe, form="tfcaf", n_agents=2, sha256="probe", igm_gate=True)
    try:
        for rows in (1, 6, 64, 65, 408):
            w, _ = worker.evaluate(np.ones((rows, 6), dtype=np.float32))
            assert w.shape == (rows, 2) and (w == CHUNK_ROWS).all(), rows
    finally:
        worker.close()
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    report = validate_source(probe, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True))
    assert report.ok and report.checks["weights"]["mean"] == CHUNK_ROWS


# red-team finding: recursing until RecursionError measured how deep the function was called, which differed between
# the validator and the worker (at most 993 frames left against at least 994): it gave full credit in validation and
# none in training. `try` is now refused (a probe can only fail, loudly), and every call starts with DEPTH_LEFT frames
# left. C-level recursion (str of a nested list) uses up the same limit.
PROBE = "def probe(k):\n    try:\n        return probe(k + 1)\n    except RuntimeError:\n        return k\n"
NESTED = ("def nested():\n    for d in range(1, 2000):\n        x = []\n        for i in range(d):\n"
          "            x = [x]\n        try:\n            str(x)\n        except RuntimeError:\n            return d\n"
          "    return 0\n")
DEPTH_PROBE = fn("return torch.ones(state.shape[0], n_agents), state[:, :1] * 0.0 + float(probe(0))", header=PROBE)


def descent(frames):
    return fn(f"return torch.ones(state.shape[0], n_agents), state[:, :1] * 0.0 + down({frames})",
              header="def down(k):\n    return 0.0 if k <= 1 else down(k - 1)\n")


def descends(f):
    try:
        f(torch.zeros(2, 6), 2)
    except RecursionError:
        return False
    return True


def test_a_function_that_catches_errors_is_refused():
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    report = validate_source(DEPTH_PROBE, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True))
    assert not report.ok and "'try' is not allowed" in " ".join(report.errors)
    with pytest.raises(TFCAFWorkerError):
        TFCAFWorker(DEPTH_PROBE, form="tfcaf", n_agents=2, sha256="depth", igm_gate=True).evaluate(states[:6])


def test_the_function_is_called_at_the_same_depth_everywhere():
    from qllm.runtime import DEPTH_LEFT, exec_checked

    def deep(d, f):
        return deep(d - 1, f) if d else f(torch.zeros(2, 6), 2)[1][0, 0].item()

    probe = exec_checked(DEPTH_PROBE, "tfcaf", "tfcaf")[0]  # the runtime layer alone (the policy refuses `try`)
    assert deep(0, probe) == deep(300, probe) == DEPTH_LEFT
    nested = exec_checked(fn("return torch.ones(state.shape[0], n_agents), state[:, :1] * 0.0 + float(nested())",
                             header=NESTED), "tfcaf", "tfcaf")[0]
    assert deep(0, nested) == deep(300, nested) and 0 < deep(0, nested) <= DEPTH_LEFT + 1
    # the deepest descent that fits here; in the sandbox it passes validation and trains, one frame more fails both
    fits = [k for k in range(DEPTH_LEFT - 5, DEPTH_LEFT + 10)
            if descends(exec_checked(descent(k), "tfcaf", "tfcaf")[0])]
    assert fits and fits == list(range(DEPTH_LEFT - 5, fits[-1] + 1)), fits
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    for frames, ok in ((fits[-1], True), (fits[-1] + 1, False)):
        report = validate_source(descent(frames), ValidationContext(n_agents=2, state_size=6, states=states,
                                                                    igm_gate=True))
        assert report.ok is ok, (frames, report.errors)
        worker = TFCAFWorker(descent(frames), form="tfcaf", n_agents=2, sha256="descent", igm_gate=True)
        try:
            if ok:
                assert (worker.evaluate(states[:6])[1] == 0).all()
            else:
                with pytest.raises(TFCAFWorkerError, match="RecursionError"):
                    worker.evaluate(states[:6])
        finally:
            worker.close()


# red-team finding: a chunk padded with all-zero rows told the function how many real states a request held, and
# one zeroed its weights only then; and per-chunk duplicates or neighbours are other tells
ZERO_TAIL = fn("zero = (state.abs().sum(1) == 0).float().sum()\n"
               "w = torch.ones(state.shape[0], n_agents) * (zero < 5).float()\n"
               "return w, state[:, :1] * 0.0")
DUPLICATES = fn("d = (state.unsqueeze(0) - state.unsqueeze(1)).abs().sum(-1)\n"
                "dup = ((d == 0).float().sum() > state.shape[0]).float()\n"
                "return torch.ones(state.shape[0], n_agents) * (1.0 - 0.5 * dup), state[:, :1] * 0.0")
NEIGHBOURS = fn("w = torch.ones(state.shape[0], n_agents) + state.abs().sum()\nreturn w, state[:, :1] * 0.0")


def test_padding_and_repeated_states_tell_the_function_nothing():
    """Padded time steps (all-zero states) are sent once, and chunks are filled with copies of real states: a
    function that zeroes its weights when its batch holds many zero rows gets none in training either."""
    worker = TFCAFWorker(ZERO_TAIL, form="tfcaf", n_agents=2, sha256="zero", igm_gate=True)
    try:
        states = np.zeros((2 * 51, 6), np.float32)  # two episodes of 51 steps; the second ends after 20
        states[:51] = np.random.default_rng(0).normal(size=(51, 6))
        states[51:71] = np.random.default_rng(1).normal(size=(20, 6))
        w, b = worker.evaluate(states)
        assert w.shape == (102, 2) and (w == 1).all() and (b == 0).all()
        assert worker.states_evaluated == 102  # the cost is counted per state asked for
    finally:
        worker.close()


@pytest.mark.parametrize("source", [DUPLICATES, NEIGHBOURS], ids=["duplicates", "neighbours"])
def test_a_function_that_reads_its_batch_is_refused_by_validation_and_stopped_in_training(source):
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    report = validate_source(source, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True))
    assert not report.ok and report.stage == "determinism", report.errors
    worker = TFCAFWorker(source, form="tfcaf", n_agents=2, sha256="batchy", igm_gate=True)
    with pytest.raises(TFCAFWorkerError, match="gave two answers for the state of row .* depends on the other "
                                               "states in the batch"):
        for seed in range(3):  # the first request has no earlier states to mix in; later ones do
            worker.evaluate(np.random.default_rng(seed).normal(size=(6, 6)).astype(np.float32))
    worker.close()


def test_huge_finite_outputs_are_refused_like_nan():
    huge = fn("return torch.full((state.shape[0], n_agents), 3.0e38), torch.full((state.shape[0], 1), -3.0e38)")
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    report = validate_source(huge, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True))
    assert not report.ok and report.stage == "finite" and "exceed ±1e+06" in " ".join(report.errors)
    worker = TFCAFWorker(huge, form="tfcaf", n_agents=2, sha256="huge", igm_gate=True)
    with pytest.raises(TFCAFWorkerError, match="beyond ±1e\\+06"):
        worker.evaluate(states)


def test_terminal_escapes_from_the_validator_never_reach_the_console(tmp_path):
    """The validator child's result is cleaned in the parent: an error text that would erase lines and fake a
    pass (or write the clipboard through OSC 52) arrives as plain text."""
    source = fn('raise ValueError("\\x1b[2K\\x1b[1A\\x1b[32mpassed every check\\x1b[0m\\x1b]52;c;cm0gLXJm\\x07")')
    states = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    report = validate_source(source, ValidationContext(n_agents=2, state_size=6, states=states, igm_gate=True))
    text = json.dumps(report.to_dict(), ensure_ascii=False) + report.summary()
    assert not report.ok and "passed every check" in text
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b")), text
