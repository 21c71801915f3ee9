"""The console summary, the console handler (writes to the sys.stderr of the moment) and the progress bars."""
import io
import logging
import sys

from utils import progress
from utils.logging import ConsoleHandler, Logger


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def console():
    log = logging.getLogger("test_logging_summary")
    log.handlers[:] = [Lines()]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, log.handlers[0].messages


def test_summary_shows_latest_values_and_labelled_interval_means():
    log, messages = console()
    logger = Logger(log)
    for t, eps in [(0, 1.0), (100, 0.9), (200, 0.8)]:
        logger.log_stat("epsilon", eps, t)
    logger.log_stat("loss", 3.0, 150)
    logger.log_stat("episode", 8, 200)
    logger.print_recent_stats(progress="200 / 1000 env steps")
    text = messages[-1]
    assert text.startswith("Recent Stats | t_env:        200 | Episode:        8 | 200 / 1000 env steps")
    latest, means = text.split("mean over this interval")
    assert "epsilon:                   0.8000" in latest and "loss:                      3.0000" in latest
    assert "epsilon (3):               0.9000" in means  # the mean of the 3 values logged in the interval
    assert "loss (" not in means  # one value: its mean is the latest value, not repeated

    # the next interval: only its own values count toward its means; a stat not logged again keeps its latest value
    logger.log_stat("epsilon", 0.7, 300)
    logger.log_stat("episode", 12, 300)
    logger.print_recent_stats()
    text = messages[-1]
    assert "epsilon:                   0.7000" in text and "loss:                      3.0000" in text
    assert "mean over this interval" not in text
    assert all(len(v) == 1 for v in logger.stats.values())  # memory stays bounded


def test_offline_labels_and_number_formats():
    log, messages = console()
    logger = Logger(log)
    logger.log_stat("episode", 16000, 500)
    logger.log_stat("env_only_steps_per_s", 12345678.9, 500)
    logger.log_stat("tiny", 1.5e-7, 500)
    logger.print_recent_stats(step_label="gradient step", count_label="samples (episodes)")
    assert messages[-1].startswith("Recent Stats | gradient step:        500 | samples (episodes):    16000")
    assert "1.23457e+07" in messages[-1] and "1.5e-07" in messages[-1]


def test_console_handler_writes_to_the_current_stderr(monkeypatch):
    handler = ConsoleHandler()
    log = logging.getLogger("test_logging_handler")
    log.handlers[:] = [handler]
    log.propagate = False
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.warning("one")
    monkeypatch.setattr(sys, "stderr", second)  # as Sacred's capture does once a run starts
    log.warning("two")
    assert first.getvalue() == "one\n" and second.getvalue() == "two\n"


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Proxy:
    """Like Sacred's capturing proxy of sys.stderr: copies what is written, `__wrapped__` is the real stream."""

    def __init__(self, wrapped):
        self.__wrapped__, self.copy = wrapped, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.__wrapped__.write(text)

    def flush(self):
        self.__wrapped__.flush()

    def isatty(self):
        return self.__wrapped__.isatty()


def test_bars_on_a_terminal_only_cleared_around_log_lines_and_never_captured(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress.Bar(10, desc="training") as bar:
        assert not bar.shown  # not a terminal: tests, CI and log files get no bar
        bar.update_to(5)
        assert bar.n == 5

    terminal = Terminal()
    captured = Proxy(terminal)
    monkeypatch.setattr(sys, "stderr", captured)
    log = logging.getLogger("test_logging_bars")
    log.handlers[:] = [ConsoleHandler()]
    log.propagate = False
    with progress.Bar(100, desc="training", unit="step") as bar:
        assert bar.shown
        bar.update_to(40)
        log.warning("a line")
        bar.update_to(100)
    screen = terminal.getvalue()
    assert "training" in screen and "40/100" in screen and "a line\n" in screen
    assert captured.copy.getvalue() == "a line\n"  # the run's cout.txt gets the log line, not the bar
    assert not progress._open


def test_clock_line():
    clock = progress.Clock(0, 1000)
    clock.started -= 10
    line = clock.line(250, "env steps")
    assert line == "250 / 1000 env steps (25%), 0:00:10 elapsed, about 0:00:30 left, 25 env steps/s overall"
    # resumed at 400 with nothing done since: no rate yet, so no made-up time left (it once said days)
    resumed = progress.Clock(400, 1000)
    resumed.started -= 67
    assert resumed.left(400) is None
    assert resumed.line(400, "episodes").startswith(
        "400 / 1000 episodes (40%), 0:01:07 elapsed, time left not known yet")


def test_console_recorded_records_meanwhile_and_nothing_after(capsys):
    """Review finding: a library's logging handler made while recording keeps the recording stream, which grew for
    the process's lifetime."""
    import sys

    from utils.logging import console_recorded

    with console_recorded() as printed:
        print("before the run")
        kept = sys.stderr  # as a StreamHandler made now keeps it
        kept.write("a warning\n")
    kept.write("later\n")
    assert "".join(printed) == "before the run\na warning\n"
    assert capsys.readouterr().err == "a warning\nlater\n"
