"""Ctrl-C in a training loop (online, offline).

The first Ctrl-C (SIGINT) asks the loop to stop at its next safe point: after the rollout and the updates under
way (offline: the gradient step) and whatever that step logs, tests or saves. There the loop saves a checkpoint
(save_model=True), the same kind an interval saves and a resume reads, names it with the key that resumes it, and
the run ends INTERRUPTED with exit status 130 (src/main.py). A second Ctrl-C stops at once, saving nothing.
A Ctrl-C that comes in the loop's last iteration (its last rollout or gradient step, or the test after it) is too
late to matter: the run finishes as if it had not come (its final checkpoint, evaluation and labels), and says so.
SIGTERM is taken the same way (utils/signals.py), ending the run with exit status 143; either signal after the
first stops at once.
"""
import os
import signal
import threading

from utils.checkpoint import folder_step
from utils.signals import STOPPING, stop


def deferrable(handler):
    """Whether a SIGINT or SIGTERM handler only raises KeyboardInterrupt, so a training loop may defer it: Python's
    default for SIGINT, or one marked `deferrable` (src/main.py's, which also makes a signal while the run winds down
    exit at once)."""
    return handler is signal.default_int_handler or getattr(handler, "deferrable", False) is True


class CtrlC:
    """Around a training loop: the first SIGINT or SIGTERM sets `requested` (the loop checks it at its safe points)
    and `by` (its name), a second raises KeyboardInterrupt (Terminated for SIGTERM) at once. It takes over a signal
    only from a handler that just raises it (`deferrable`), in the main thread (where signal handlers live); an
    ignored SIGINT (nohup), SIGTERM's default action or another program's handler is left as it is."""

    def __init__(self, _log, safe_point, saves):
        self.requested, self.by = False, None
        # for the message: what the loop finishes first, and whether it saves a checkpoint there (save_model)
        self._log, self._safe_point, self._saves = _log, safe_point, saves
        self._previous = {}  # signal -> the handler taken over
        self._signum = self._again = None  # the signal that asked to stop, the one that then stopped it at once
        self._not_deferred = None  # why a Ctrl-C is not deferred here (None: it is)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            self._not_deferred = "the training loop runs outside the main thread, where Ctrl-C cannot be deferred"
            return self
        self._not_deferred = None if deferrable(signal.getsignal(signal.SIGINT)) else \
            "SIGINT has another handler than Python's default here, which this run leaves as it is"
        for signum in STOPPING:
            if deferrable(signal.getsignal(signum)):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:  # (the previous one may have installed its own)
                signal.signal(signum, previous)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.requested:
            self._again = signum
            if self._previous[signum] is not signal.default_int_handler:
                self._previous[signum](signum, frame)  # src/main.py's: raises, and a further one then exits at once
            raise stop(signum)
        self.requested, self.by, self._signum = True, STOPPING[signum], signum
        then = ", then saving a checkpoint there" if self._saves else " (save_model=False: no checkpoint)"
        self._log.warning(f"{self.by}: stopping after {self._safe_point}{then}; {self.by} again stops at once"
                          + (" without saving" if self._saves else ""))

    def interrupt(self):
        """The exception that ends the run once the loop stopped at its safe point (main.py's exit status)."""
        return stop(self._signum)

    def stops(self, finished):
        """Whether the loop, at its end, stops for a Ctrl-C: False when none came, or when the loop has reached its
        budget (`finished`) all the same: that request came too late to matter, said and dropped, so the run finishes
        normally (its final checkpoint, evaluation and labels)."""
        if self.requested and finished:
            self._log.warning(f"{self.by} came too late to matter: training had reached its end; the run finishes "
                              "normally")
            self.requested = False
        return self.requested

    def why_at_once(self):
        """Why a KeyboardInterrupt stopped the loop where it was, for interrupted(): a second signal, or a Ctrl-C this
        run could not defer."""
        if self._again is not None:
            again = STOPPING[self._again]
            return f"{again} again" if again == self.by else f"{again} after {self.by}"
        if self._not_deferred:
            return f"Ctrl-C, not deferred: {self._not_deferred}"
        return "KeyboardInterrupt"


def interrupted(ctx, step_label, step, _log, at_once=None):
    """After Ctrl-C (SIGTERM) in a training loop: one line naming where the run stopped, its last checkpoint and the
    key that resumes it (no traceback: main.py ends the run as INTERRUPTED with exit status 130, 143 for SIGTERM).
    at_once: why it stopped where it was (CtrlC.why_at_once: a second signal, or a Ctrl-C the loop could not defer),
    so nothing after its last checkpoint was saved."""
    last, args = getattr(ctx, "last_checkpoint", None), ctx.args
    how = (f"Stopped at once at {step_label} {step} ({at_once}): nothing was saved since the last checkpoint"
           if at_once else f"Interrupted at {step_label} {step}")
    if last:
        _log.warning(f"{how}. Last checkpoint: {step_label} {folder_step(last)} in {os.path.dirname(last)}; resume "
                     f"with: with checkpoint_path={os.path.dirname(last)}")
    else:
        _log.warning(f"{how}; no checkpoint was saved in this run"
                     + ("" if args.save_model else " (save_model=False)") + ", so it cannot be resumed")
