"""Progress of long loops (training, evaluation, collection): a tqdm bar with rate and ETA while stderr is a
terminal, nothing otherwise (tests, CI, `nohup`, a log file), where the run's plain line per interval says the same.

The console handler (utils.logging) clears the open bars around each log line, so lines and bars do not mix; the
bars write to the terminal itself, never into the run's captured console log (Sacred's cout.txt). TQDM_DISABLE=1
turns the bars off on a terminal too (tqdm reads TQDM_* variables as its defaults).
"""
import sys
import threading
import time
from contextlib import contextmanager

_open = []  # the bars on the screen now, newest last
_lock = threading.RLock()


def interactive(stream=None):
    """Whether `stream` (sys.stderr by default, looked up now: Sacred replaces it while a run is captured) is a
    terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal():
    """The stream the bars write to: stderr, without Sacred's capturing proxy (its `__wrapped__`), so that bar
    redraws never reach cout.txt."""
    stream = sys.stderr
    return getattr(stream, "__wrapped__", stream)


class Bar:
    """A progress bar over `total` units from `initial`; inert when stderr is not a terminal (or enabled=False).
    Use `update_to(n)` with the absolute position (env steps, gradient steps, episodes) or `update(k)`."""

    def __init__(self, total, initial=0, desc=None, unit="it", enabled=None):
        self.n = initial
        self._bar = None
        if enabled is None:
            enabled = interactive()
        if enabled:
            from tqdm import tqdm  # imported only when a bar is drawn

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=_terminal(),
                             dynamic_ncols=True, leave=False, unit_scale=bool(total and total >= 10000))
            with _lock:
                _open.append(self)

    @property
    def shown(self):
        return self._bar is not None

    def update_to(self, n):
        self.update(n - self.n)

    def update(self, k=1):
        self.n += k
        if self._bar is not None and k:
            self._bar.update(k)

    def set_postfix(self, **values):
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self):
        if self._bar is not None:
            with _lock:
                if self in _open:
                    _open.remove(self)
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@contextmanager
def bars_cleared():
    """Around a write to the terminal (a log line): the open bars are cleared first and drawn again after."""
    with _lock:
        bars = [b._bar for b in _open if b._bar is not None]
        for bar in bars:
            bar.clear(nolock=True)
        try:
            yield
        finally:
            for bar in bars:
                bar.refresh(nolock=True)


def time_str(seconds):
    """H:MM:SS (with days when there are any), pymarl's format."""
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    return (f"{days} days, " if days else "") + f"{hours:d}:{minutes:02d}:{secs:02d}"


class Clock:
    """Wall time since a loop (or its resume) started at `start`, and the time left to `total` at that rate."""

    def __init__(self, start, total):
        self.start, self.total = start, total
        self.started = time.time()

    def elapsed(self):
        return time.time() - self.started

    def left(self, step):
        """Seconds to `total` at the rate since the start; None before the first unit is done (no rate yet)."""
        if step <= self.start:
            return None
        return max(self.total - step, 0) * self.elapsed() / (step - self.start)

    def left_str(self, step):
        """'about 0:00:30 left', or 'time left not known yet' before the first unit is done."""
        left = self.left(step)
        return "time left not known yet" if left is None else f"about {time_str(left)} left"

    def rate(self, step):
        return (step - self.start) / max(self.elapsed(), 1e-9)

    def line(self, step, unit):
        """'2025 / 10000 env steps (20%), 0:00:01 elapsed, about 0:00:03 left, 1500 env steps/s overall': the rate is
        the loop's whole time since it started (acting, training, tests, saving), not one part of it."""
        percent = min(100.0, 100.0 * step / self.total) if self.total else 100.0
        return (f"{step} / {self.total} {unit} ({percent:.0f}%), {time_str(self.elapsed())} elapsed, "
                f"{self.left_str(step)}, {self.rate(step):.0f} {unit}/s overall")
