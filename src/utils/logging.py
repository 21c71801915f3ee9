"""pymarl's Logger: console summaries, Sacred info.json (key / key_T lists) and metrics.json, TensorBoard; and the
console handler.

The console summary ("Recent Stats") at a log interval shows the latest logged value of every stat, the one
info.json holds last, and, for the stats logged more than once since the previous summary, their mean over that
interval, labelled as such.

The console handler writes to `sys.stderr` as it is when a line is written, not when the handler was made: Sacred
replaces sys.stderr while a run is captured (capture mode `sys`), so the whole console log of a run lands in its
cout.txt too.
"""
import contextlib
import logging
import sys
from collections import defaultdict

from utils.progress import bars_cleared

COLUMNS = 4  # stats per console line


class Logger:
    def __init__(self, console_logger):
        self.console_logger = console_logger
        self.use_tb = False
        self.use_sacred = False
        # key -> [(t, value)]: the values logged since the last summary, after the latest one before it
        self.stats = defaultdict(list)
        self._fresh = defaultdict(int)  # key -> values logged since the last summary
        self._tb_writer = None

    def setup_tb(self, directory, purge_step=None):
        """TensorBoard events in `directory`; `purge_step`: the step after a resumed run's checkpoint, from which
        TensorBoard drops the events an earlier process wrote there (those it logged after the checkpoint before it
        died)."""
        from torch.utils.tensorboard import SummaryWriter  # imported only when used (slow import)

        self._tb_writer = SummaryWriter(log_dir=directory, purge_step=purge_step)
        self.use_tb = True

    def setup_sacred(self, sacred_run_dict):
        self.sacred_info = sacred_run_dict.info
        self._run = sacred_run_dict
        self.use_sacred = True

    def log_stat(self, key, value, t, to_sacred=True):
        value = float(value)
        self.stats[key].append((t, value))
        self._fresh[key] += 1
        if self.use_tb:
            self._tb_writer.add_scalar(key, value, t)
        if self.use_sacred and to_sacred:
            self.sacred_info.setdefault(key, []).append(value)
            self.sacred_info.setdefault(f"{key}_T", []).append(int(t))
            self._run.log_scalar(key, value, int(t))

    def log_histogram(self, key, values, t):
        if self.use_tb:
            self._tb_writer.add_histogram(key, values, t)

    def latest(self, key, default=None):
        """The latest value logged for `key`."""
        values = self.stats.get(key)
        return values[-1][1] if values else default

    def print_recent_stats(self, step_label="t_env", count_label="Episode", progress=None):
        """Print the summary of the stats at the step of the latest `episode` stat (the run's count: episodes
        played, test episodes or samples drawn, as `count_label` says). `progress`: text for the header (steps
        done of the total, time elapsed and left)."""
        if "episode" not in self.stats:
            return
        t, count = self.stats["episode"][-1]
        header = f"Recent Stats | {step_label}: {t:>10} | {count_label}: {int(count):>8}"
        if progress:
            header += f" | {progress}"
        keys = sorted(k for k in self.stats if k != "episode")
        lines = [header, *(["latest values:", *_table((k, self.stats[k][-1][1]) for k in keys)] if keys else [])]
        means = [(f"{k} ({self._fresh[k]})", sum(v for _, v in self.stats[k][-self._fresh[k]:]) / self._fresh[k])
                 for k in keys if self._fresh[k] > 1]
        if means:
            lines += ["mean over this interval (number of values):", *_table(means)]
        self.console_logger.info("\n".join(lines))
        # keep memory bounded on long runs: the next summary needs the latest value of each stat only
        for k in self.stats:
            del self.stats[k][:-1]
        self._fresh.clear()

    def finish(self):
        if self._tb_writer is not None:
            self._tb_writer.flush()
            self._tb_writer.close()


def _table(items):
    cells = [f"{k + ':':<25}{_number(v):>8}" for k, v in items]
    return ["\t".join(cells[i:i + COLUMNS]) for i in range(0, len(cells), COLUMNS)]


def _number(v):
    """4 decimals, as pymarl printed them; large or tiny magnitudes in 6 significant digits."""
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e6 else f"{v:.6g}"


class ConsoleHandler(logging.StreamHandler):
    """A StreamHandler on the current sys.stderr (see the module docstring) that clears progress bars around its
    lines."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ and setStream assign it; sys.stderr is always used
        pass

    def emit(self, record):
        with bars_cleared():
            super().emit(record)


class _Tee:
    """A text stream that also records what is written to it."""

    def __init__(self, stream, record):
        self._stream, self._record = stream, record

    def write(self, text):
        if self._record is not None:
            self._record.append(text)
        return self._stream.write(text)

    def stop(self):
        """Record nothing more: a handler made meanwhile (a library's logging) keeps this stream for its lifetime."""
        self._record = None

    def __getattr__(self, name):  # flush, isatty, fileno, encoding...: the stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def console_recorded():
    """Yields a list of what is written to sys.stdout and sys.stderr meanwhile (still written there): what a run
    prints before Sacred's capture starts (config warnings), so that its cout.txt holds the whole console log."""
    record, out, err = [], sys.stdout, sys.stderr
    tees = _Tee(out, record), _Tee(err, record)
    sys.stdout, sys.stderr = tees
    try:
        yield record
    finally:
        sys.stdout, sys.stderr = out, err
        for tee in tees:
            tee.stop()


def get_logger():
    logger = logging.getLogger("pymarl")
    if not logger.handlers:
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
