"""main.second_interrupt_exits: the first Ctrl-C is a KeyboardInterrupt (deferrable: a training loop may take it
over), a second one, during the wind-down or after it, exits at once with status 130 and one line."""
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
with second_interrupt_exits():
    assert signal.getsignal(signal.SIGINT).deferrable
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        print("first", flush=True)
print("wound down", flush=True)
if sys.argv[1] == "after":
    signal.raise_signal(signal.SIGINT)  # the process hangs on its way out; Ctrl-C must still end it
    time.sleep(30)
print("not reached", flush=True)
"""


def test_without_an_interrupt_the_default_handler_comes_back(sigint_default):
    with second_interrupt_exits():
        handler = signal.getsignal(signal.SIGINT)
        assert handler is not signal.default_int_handler and handler.deferrable
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_after_the_wind_down_exits_at_once_with_one_line():
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "src"))
    p = subprocess.run([sys.executable, "-c", SCRIPT, "after"], env=env, capture_output=True, text=True, timeout=60,
                       preexec_fn=sigint_as_in_a_terminal)
    assert p.returncode == 130 and p.stdout.split() == ["first", "wound", "down"], (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == ["interrupted again (Ctrl-C): exiting now, status 130"]
