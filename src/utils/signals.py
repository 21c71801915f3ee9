"""Ctrl-C (SIGINT), SIGTERM and the processes a run starts.

SIGTERM (kill, timeout, a scheduler's cancel or preemption, docker stop) is taken as a Ctrl-C is (src/main.py,
run/interrupt.py): it raises Terminated, a KeyboardInterrupt, so every run mode stops the same way; only the names
in the messages and the exit status (143, not 130) say which signal it was.

A terminal's Ctrl-C signals its whole foreground process group: the run's main process, which defers it to a safe
point of the training loop (run/interrupt.py), and every process the run started in that group. Those must not die
of it: the loop then fails in its rollout instead of stopping at the safe point. A child started inside
`children_sigint_blocked()` inherits SIGINT blocked: the signal mask survives fork and exec (a handler does not: exec
resets it to the default, which terminates), so the Ctrl-C stays pending in the child, never delivered. Python
children (the parallel runner's workers) then ignore it and unblock it; programs such as StarCraft II keep it
blocked (envs/smac.py launches it inside this).
"""
import signal
from contextlib import contextmanager

STOPPING = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # the signals a run stops at a safe point for


class Terminated(KeyboardInterrupt):
    """The KeyboardInterrupt of a SIGTERM: the run stops as for a Ctrl-C, and exits with status 143."""


def stop(signum):
    """The exception a stop signal raises: KeyboardInterrupt for Ctrl-C, Terminated for SIGTERM."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stopped_by(error):
    """The name of the signal a KeyboardInterrupt stands for (a plain one: Ctrl-C)."""
    return STOPPING[signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT]


def exit_status(error):
    """128 + the signal a KeyboardInterrupt stands for: what a shell or a scheduler reads as killed by it."""
    return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)


@contextmanager
def children_sigint_blocked():
    """Around starting child processes from this thread: they inherit SIGINT blocked. This thread's own SIGINT is
    held meanwhile and delivered when the block ends (or at once, to another thread of the process that does not
    block it): a Ctrl-C during the start still reaches the run's handler; two presses held together count as one."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextmanager
def handlers_restored(*signums):
    """Around a library call that installs signal handlers of its own and leaves them in place (Ray Tune's fit()
    keeps its SIGINT and SIGUSR1 handlers, which only set an event, after it returns): the handlers found are put
    back, so a Ctrl-C after the call is an ordinary one again, not an event nobody waits for. Main thread only."""
    found = {s: signal.getsignal(s) for s in signums}
    try:
        yield
    finally:
        for s, handler in found.items():
            if handler is not None and signal.getsignal(s) is not handler:
                signal.signal(s, handler)
