"""main.second_interrupt_exits: the first Ctrl-C is a KeyboardInterrupt, a first SIGTERM its subclass Terminated
(deferrable: a training loop may take them over), a second one, during the wind-down or after it, exits at once with
status 128 + its signal and one line."""
import os
import signal
import subprocess
import sys

from helpers import sigint_as_in_a_terminal
from main import second_interrupt_exits
from utils.paths import REPO_ROOT

SCRIPT = r"""
import signal, sys, time
from main import second_interrupt_exits
first, again = (signal.SIGTERM, signal.SIGINT) if sys.argv[2] == "sigterm" else (signal.SIGINT, signal.SIGINT)
with second_interrupt_exits():
    assert signal.getsignal(signal.SIGINT).deferrable and signal.getsignal(signal.SIGTERM).deferrable
    try:
        signal.raise_signal(first)
    except KeyboardInterrupt as e:
        print("first", type(e).__name__, flush=True)
print("wound down", flush=True)
if sys.argv[1] == "after":
    signal.raise_signal(again)  # the process hangs on its way out; Ctrl-C must still end it
    time.sleep(30)
print("not reached", flush=True)
"""


def test_without_an_interrupt_the_default_handler_comes_back(sigint_default):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with second_interrupt_exits():
        for s in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(s)
            assert handler not in (signal.default_int_handler, signal.SIG_DFL) and handler.deferrable
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_ctrl_c_after_the_wind_down_exits_at_once_with_one_line():
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"))
    p = subprocess.run([sys.executable, "-c", SCRIPT, "after", "sigint"], env=env, capture_output=True, text=True,
                       timeout=60, preexec_fn=sigint_as_in_a_terminal)
    assert p.returncode == 130 and p.stdout.split() == ["first", "KeyboardInterrupt", "wound", "down"], (p.stdout,
                                                                                                          p.stderr)
    assert p.stderr.strip().splitlines() == ["interrupted again (Ctrl-C): exiting now, status 130"]


def test_a_sigterm_is_taken_as_a_first_ctrl_c_and_any_second_signal_exits_at_once():
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"))
    p = subprocess.run([sys.executable, "-c", SCRIPT, "after", "sigterm"], env=env, capture_output=True, text=True,
                       timeout=60, preexec_fn=sigint_as_in_a_terminal)
    assert p.returncode == 130 and p.stdout.split() == ["first", "Terminated", "wound", "down"], (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == ["interrupted again (Ctrl-C): exiting now, status 130"]
