"""The validator: checks on real env states in a separate, limited process; hostile code cannot hurt the host."""
import json
import os
import re

import numpy as np
import pytest

from qllm.sandbox import child_env as _child_env
from qllm.states import sample_states
from qllm.validate import STAGES, ValidationContext, validate_source

N_AGENTS = 2


@pytest.fixture(scope="module")
def states():
    return sample_states("matrix_game", {"game": "climbing", "episode_limit": 10}, n=64, seed=0)


@pytest.fixture
def ctx(states):
    return ValidationContext(n_agents=N_AGENTS, state_size=states.shape[1], states=states, igm_gate=True,
                             time_limit_s=20.0)


@pytest.fixture
def host_cwd(tmp_path, monkeypatch):
    """Run in an empty cwd and check afterwards that nothing was created in it."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert list(tmp_path.iterdir()) == []


def tfcaf(body):
    return "import torch\n\ndef tfcaf(state, n_agents):\n" + "\n".join("    " + ln for ln in body.splitlines()) + "\n"


GOOD = tfcaf("w = torch.softmax(state[:, :n_agents] - state[:, n_agents:2 * n_agents], dim=-1) * n_agents\n"
             "b = 0.1 * state.sum(-1, keepdim=True) * torch.tensor([1.0])\nreturn w, b")


def test_good_candidate_passes_with_measurements(ctx, host_cwd):
    report = validate_source(GOOD, ctx)
    assert report.ok and report.stage == "ok" and report.errors == [], report.feedback()
    c = report.checks
    assert c["policy"]["form"] == "tfcaf" and c["form"] == "tfcaf"
    assert c["speed"]["batch"] == 4096 and 0 < c["speed"]["forward_ms"] < 200
    assert c["sandbox"]["limit_vm_mb"] - c["sandbox"]["baseline_vm_mb"] == pytest.approx(1024, abs=1)
    assert c["weights"]["mean"] == pytest.approx(1.0, abs=1e-5) and c["gate"]["negative_weight_fraction"] == 0
    assert report.timing_ms > 0 and report.feedback() == "The function passed every check."
    assert json.loads(json.dumps(report.to_dict()))["stage"] == "ok"


def test_legacy_form_passes(ctx):
    src = ("import torch\ndef QLLMNetwork(agents_q, global_state):\n"
           "    w = torch.softmax(global_state[:, :2], dim=-1)\n    return (w * agents_q).sum(-1, keepdim=True)\n")
    report = validate_source(src, ctx)
    assert report.ok, report.feedback()
    assert report.checks["linear"]["ok"] and report.checks["form"] == "legacy"
    assert report.checks["weights"]["mean"] == pytest.approx(0.5, abs=1e-5)  # softmax over 2 agents, read off f


def test_a_legacy_function_that_is_not_linear_in_q_is_refused(ctx):
    for body in ("return (agents_q ** 2).sum(-1, keepdim=True)",
                 "return agents_q.max(-1, keepdim=True).values",
                 "return torch.where(agents_q.sum(-1, keepdim=True) > 100.0, agents_q[:, :1], agents_q.sum(-1, "
                 "keepdim=True))"):
        src = f"import torch\ndef QLLMNetwork(agents_q, global_state):\n    {body}\n"
        report = validate_source(src, ctx)
        assert not report.ok and report.stage == "linear" and "not linear in agents_q" in report.errors[0], body


def test_negative_weights_are_a_sign_violation_only_under_the_gate(ctx):
    src = tfcaf("return state[:, :n_agents] - 0.5, state[:, :1]")
    report = validate_source(src, ctx)
    assert not report.ok and report.stage == "gate" and "must be non-negative" in report.errors[0]
    assert report.checks["gate"]["negative_weight_fraction"] > 0 and "clamp(min=0)" in report.feedback()
    ctx.igm_gate = False
    report = validate_source(src, ctx)
    assert report.ok and report.checks["gate"]["negative_weight_fraction"] > 0


@pytest.mark.parametrize("name,src,stage,message", [
    ("shape", tfcaf("return torch.ones(state.shape[0], n_agents), state.sum(-1)"), "shape",
     r"bias has shape \[64\] but must be \[B, 1\] = \[64, 1\] \(use b.unsqueeze"),
    ("tuple", tfcaf("return torch.ones(state.shape[0], n_agents)"), "shape", "tuple \\(weights, bias\\)"),
    ("nan on the all-zero state", tfcaf("w = state[:, :n_agents] / state.sum(-1, keepdim=True)\n"
                                        "return w, state[:, :1]"), "finite", "all-zero state"),
    ("error", tfcaf("return torch.mm(state, state), 1"), "exec", "mat1 and mat2 shapes cannot be multiplied"),
    ("mutation", tfcaf("state[:, 0] = 1.0\nreturn state[:, :n_agents], state[:, :1]"), "mutation", "in place"),
    ("batch-dependent", tfcaf("w = torch.softmax(state[:, :n_agents].mean(0, keepdim=True), -1)\n"
                              "return w.expand(state.shape[0], -1), state[:, :1]"), "determinism",
     "other states in the batch"),
    ("zero weights", tfcaf("return torch.zeros(state.shape[0], n_agents), state[:, :1]"), "gradient", "zero"),
    ("constant legacy",
     "def QLLMNetwork(agents_q, global_state):\n    return global_state[:, :1] * 0.0\n",
     "gradient", "every weight is zero"),
    ("non-monotonic legacy", "def QLLMNetwork(agents_q, global_state):\n    return agents_q[:, :1] - agents_q[:, 1:]\n",
     "gate", "must be non-negative"),
    ("slow", tfcaf("rows = [torch.softmax(state[i, :n_agents], -1) for i in range(state.shape[0])]\n"
                   "return torch.stack(rows), state[:, :1]"), "speed", "vectorise"),
])
def test_failures_name_the_stage_and_say_how_to_fix(ctx, name, src, stage, message):
    ctx.speed_limit_ms = 10.0  # a loop over 4096 rows takes tens of ms; vectorised code well under 1 ms
    report = validate_source(src, ctx)
    assert not report.ok and report.stage == stage, (name, report.stage, report.errors)
    assert re.search(message, " ".join(report.errors)), report.errors
    text = report.feedback()
    assert f"'{stage}' check" in text and "How to fix" in text and "```python" in text
    assert not re.search(r"/(work|tmp|home|usr)/", text), text  # no host paths


def test_traceback_shows_the_candidates_line(ctx):
    report = validate_source(tfcaf("x = state[:, :n_agents]\ny = x.reshape(7, 7, 7)\nreturn x, y"), ctx)
    assert report.stage == "exec"
    assert any("line 5, in tfcaf: y = x.reshape(7, 7, 7)" in ln for ln in report.traceback), report.traceback
    assert "y = x.reshape(7, 7, 7)" in report.feedback()


def test_ungated_non_monotonic_legacy_is_fine(states):
    ctx = ValidationContext(n_agents=N_AGENTS, state_size=states.shape[1], states=states, igm_gate=False)
    report = validate_source("def QLLMNetwork(agents_q, global_state):\n"
                             "    return agents_q[:, :1] - agents_q[:, 1:]\n", ctx)
    assert report.ok, report.feedback()


# --- hostile code


@pytest.mark.parametrize("body", [
    "import os\nos.system('touch pwned')",
    "import subprocess\nsubprocess.run(['touch', 'pwned'])",
    "import socket\nsocket.create_connection(('127.0.0.1', 80))",
    "open('pwned', 'w').write('x')",
    "torch.save(state, 'pwned')",
    "torch.os.fork()",
    "().__class__.__bases__[0].__subclasses__()",
    "getattr(torch, 'lo' + 'ad')('x')",
    "torch.load('x')",
    "exec(\"import os; os.system('touch pwned')\")",
    "while True:\n    pass",
])
def test_hostile_code_is_rejected_by_the_policy_without_running(ctx, host_cwd, body):
    report = validate_source(tfcaf(body + "\nreturn state, state"), ctx)
    assert not report.ok and report.stage == "policy" and "sandbox" not in report.checks


def test_infinite_loop_is_killed(states, host_cwd):
    ctx = ValidationContext(n_agents=N_AGENTS, state_size=states.shape[1], states=states, igm_gate=True,
                            time_limit_s=2.0)
    report = validate_source(tfcaf("s = 0\nfor i in range(10 ** 12):\n    s += i\nreturn state, state"), ctx)
    assert not report.ok and report.stage == "exec" and "timed out after 2 s" in report.errors[0]
    assert report.timing_ms < 30_000


@pytest.mark.parametrize("body", [
    "x = torch.ones(50 * 1024 ** 3 // 4)",  # 50 GB at once
    "xs = [torch.ones(64 * 1024 ** 2 // 4) for i in range(1000)]",  # 64 MB at a time
])
def test_memory_bombs_hit_the_limit(ctx, host_cwd, body):
    report = validate_source(tfcaf(body + "\nreturn state, state"), ctx)
    assert not report.ok and report.stage == "exec" and "out of memory" in report.errors[0], report.errors


@pytest.mark.parametrize("body,error", [
    ("import os\nos.system('touch pwned')", "ImportError"),
    ("open('pwned', 'w').write('x')", "NameError"),
    ("x = torch.os.system", "AttributeError"),
])
def test_sandbox_runtime_refuses_even_without_the_policy(ctx, host_cwd, body, error):
    """Second layer: with the static policy skipped, the restricted namespace still refuses."""
    report = validate_source(tfcaf(body + "\nreturn state, state"), ctx, _check_policy=False)
    assert not report.ok and report.stage == "exec" and error in report.errors[0], report.errors
    assert report.checks["policy"]["skipped"]


def test_child_environment_holds_no_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    env = _child_env(str(tmp_path))
    assert "sk-secret" not in json.dumps(env) and "secret" not in json.dumps(env)
    assert env["HOME"] == str(tmp_path)


def test_bad_context_is_a_programming_error(states):
    with pytest.raises(ValueError, match="state_size=5"):
        validate_source(GOOD, ValidationContext(n_agents=2, state_size=5, states=states, igm_gate=True))
    bad = states.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate_source(GOOD, ValidationContext(n_agents=2, state_size=states.shape[1], states=bad, igm_gate=True))


def test_empty_and_unparsable_sources(ctx):
    assert validate_source("", ctx).stage == "parse"
    assert validate_source(None, ctx).stage == "parse"
    r = validate_source("def tfcaf(state, n_agents):\n    return (state,\n", ctx)
    assert r.stage == "parse" and "SyntaxError" in r.errors[0] and "How to fix" in r.feedback()
    # the coder's text asks for an answer; the person's summary does not
    assert r.feedback().endswith("```python block.") and "```" not in r.summary() and "Fix the syntax" in r.summary()
    assert set(STAGES) >= {"parse", "policy", "exec", "shape", "finite", "gradient", "gate", "determinism",
                           "mutation", "speed", "ok"}


def test_command_line_validates_and_records_the_hash(tmp_path, capsys):
    from qllm_validate import main  # scripts/qllm_validate.py

    path = tmp_path / "mine.py"
    path.write_text(GOOD)
    assert main([str(path), "--env-config", "climbing", "--states", "32", "--write-meta"]) == 0
    meta = json.loads((tmp_path / "mine.meta.json").read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(GOOD.encode()).hexdigest() and meta["file"] == "mine.py"
    assert meta["igm_gate"] is True and meta["validation"]["ok"]
    out = capsys.readouterr().out
    assert "mine.py passed every check" in out and f"wrote {tmp_path / 'mine.meta.json'}" in out
    assert f"--config=qllm --env-config=climbing with tfcaf_path={path}" in out
    bad = tmp_path / "bad.py"
    bad.write_text(tfcaf("return state, state"))
    assert main([str(bad), "--env-config", "climbing", "--states", "32", "--write-meta"]) == 1
    err = capsys.readouterr().err
    # for a person: what failed and how to fix it, not the prompt text meant for the coder LLM
    assert "bad.py failed the 'shape' check" in err and "How to fix" in err and "no validation record" in err
    assert "```" not in err and "Answer with" not in err
    assert sorted(os.listdir(tmp_path)) == ["bad.py", "mine.meta.json", "mine.py"]
    assert main([str(tmp_path / "nope.py"), "--env-config", "climbing"]) == 2
    assert "cannot read" in capsys.readouterr().err


def run_confined(tmp_path, imports, body, confine_call):
    """Run `body` in `python -I` after `confine_call` (the sandbox children's own confinement; `imports` come
    before it: nothing can be imported once confined); returns its stdout words and all its output."""
    import subprocess
    import sys

    from utils.paths import SRC_DIR

    require_seccomp()
    head = f"import os, sys, {imports}\nsys.path.insert(0, sys.argv[1])\nfrom qllm.confine import confine\n"
    probe = f"{head}info = {confine_call}\n{body}"
    box = tmp_path / "box"
    box.mkdir()
    res = subprocess.run([sys.executable, "-I", "-c", probe, SRC_DIR], cwd=box, capture_output=True, text=True,
                         timeout=60)
    return res.stdout.split(), res.stdout + res.stderr


def require_seccomp():
    """The filter needs libseccomp (Debian: libseccomp2, in every image here); skip without it, except in CI."""
    import ctypes.util

    from helpers import require_nothing_missing

    missing = [] if ctypes.util.find_library("seccomp") else ["libseccomp is not installed"]
    require_nothing_missing(missing, "apt-get install libseccomp2")


def test_process_limits_stop_files_sockets_and_memory_even_for_unrestricted_code(tmp_path):
    """Third layer: after the child confines itself, even plain Python cannot open files or sockets or grab memory."""
    words, output = run_confined(tmp_path, "socket", (
        "out = []\n"
        "for name, f in [('file', lambda: open('pwned', 'w')), ('socket', lambda: socket.socket()),\n"
        "                ('memory', lambda: bytearray(256 * 2**20))]:\n"
        "    try:\n"
        "        f()\n"
        "        out.append(name + ':allowed')\n"
        "    except (OSError, MemoryError) as e:\n"
        "        out.append(name + ':' + ('OSError' if isinstance(e, OSError) else type(e).__name__))\n"
        "print(' '.join(out))\n"
        "print(info['seccomp'])\n"), "confine(None, 64, 5)")
    assert words[:3] == ["file:OSError", "socket:OSError", "memory:MemoryError"], output
    assert words[3] == "True"  # the seccomp filter is active on this machine (and CI's)
    assert list(tmp_path.iterdir()) == []  # its working directory is gone: nothing could be left there


def test_huge_error_messages_are_clipped(ctx):
    report = validate_source(tfcaf("raise ValueError('x' * 50_000_000)"), ctx)
    assert report.stage == "exec" and len(report.feedback()) < 10_000 and "more characters" in report.errors[0]


def test_native_calls_after_confinement_cannot_reach_the_parent_or_undo_the_limits(tmp_path):
    """Defence in depth (red-team finding): even native code in a confined process cannot signal the training
    process, switch off dying with it, raise its own limits or keep root."""
    words, output = run_confined(tmp_path, "ctypes, resource", (
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = [str(info['uid'])]\n"
        "out.append('kill:' + str(libc.kill(os.getppid(), 0)))\n"
        "out.append('pdeathsig:' + str(libc.prctl(1, 0, 0, 0, 0)))\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
        "    out.append('rlimit:raised')\n"
        "except (OSError, ValueError):\n"
        "    out.append('rlimit:refused')\n"
        "print(' '.join(out))\n"), "confine(os.getppid(), 64)")
    uid, kill, pdeathsig, rlimit = words
    assert kill == "kill:-1" and pdeathsig == "pdeathsig:-1" and rlimit == "rlimit:refused", output
    assert uid == ("65534" if os.geteuid() == 0 else str(os.geteuid()))


def test_the_seccomp_layer_alone_refuses_file_changes_scheduling_and_signals_on_io(tmp_path):
    """Red-team finding: where the sandbox cannot drop to nobody (a non-root user, root without CAP_SETUID), the
    filter is the layer that stops a change to the user's files: times, attributes and fchmodat2 (syscall 452,
    beside the refused chmod), the parent's scheduling or I/O priority, and fcntl's signal-on-I/O route to it.
    It is an allow-list: looking at files (stat, readlink), the host (uname, the working directory), the terminal
    (ioctl) and calls it never names (faccessat2) are refused too."""
    import subprocess
    import sys

    from utils.paths import SRC_DIR

    require_seccomp()
    victim = tmp_path / "victim"
    victim.write_text("x")
    probe = (
        "import ctypes, fcntl, os, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from qllm.confine import build_seccomp_filter\n"
        "filt, why = build_seccomp_filter()\n"
        "fd = os.open(sys.argv[2], os.O_RDONLY)\n"
        "filt.load()\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = []\n"
        "def attempt(name, f):\n"
        "    try:\n"
        "        r = f()\n"
        "        out.append(name + (':refused' if r == -1 else ':allowed'))\n"
        "    except OSError:\n"
        "        out.append(name + ':refused')\n"
        "attempt('utime', lambda: os.utime(sys.argv[2], (0, 0)))\n"
        "attempt('setxattr', lambda: os.setxattr(sys.argv[2], 'user.pwned', b'1'))\n"
        "attempt('fchmodat2', lambda: libc.syscall(452, -100, sys.argv[2].encode(), 0o777, 0))\n"
        "attempt('sched', lambda: os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0)))\n"
        "attempt('ioprio', lambda: libc.syscall(251, 1, os.getppid(), (3 << 13)))\n"
        "attempt('setown', lambda: fcntl.fcntl(fd, fcntl.F_SETOWN, os.getppid()))\n"
        "attempt('setsig', lambda: fcntl.fcntl(fd, 10, 9))\n"
        "attempt('stat', lambda: os.stat(sys.argv[2]))\n"
        "attempt('readlink', lambda: os.readlink('/proc/self/exe'))\n"
        "attempt('uname', lambda: os.uname())\n"
        "attempt('getcwd', lambda: os.getcwd())\n"
        "attempt('ioctl', lambda: libc.ioctl(0, 0x5412, ctypes.c_char_p(b'x')))\n"  # TIOCSTI
        "attempt('unknown', lambda: libc.syscall(439, -100, sys.argv[2].encode(), 0, 0))\n"  # faccessat2
        "attempt('getfl', lambda: 0 if fcntl.fcntl(fd, fcntl.F_GETFL) >= 0 else -1)\n"
        "print(' '.join(out))\n")
    res = subprocess.run([sys.executable, "-I", "-c", probe, SRC_DIR, str(victim)], capture_output=True, text=True,
                         timeout=60)
    words = res.stdout.split()
    assert words[:-1] == [f"{n}:refused" for n in ("utime", "setxattr", "fchmodat2", "sched", "ioprio", "setown",
                                                    "setsig", "stat", "readlink", "uname", "getcwd", "ioctl",
                                                    "unknown")], res.stdout + res.stderr
    assert words[-1] == "getfl:allowed"  # fcntl itself still works (Python and torch use it)
    assert oct(victim.stat().st_mode)[-3:] != "777" and victim.stat().st_mtime > 0
