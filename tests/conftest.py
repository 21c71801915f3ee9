import torch

# Small nets on 2 cores: one thread is much faster and avoids oversubscription when
# tests start env worker processes (the runs themselves use the torch_threads config key).
torch.set_num_threads(1)

import atexit  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The validator's signing key (qllm.records) lives in the user's config directory: tests get their own, so they
# never create or read ~/.config/llm-pymarl/validator.key of the person running them.
os.environ["XDG_CONFIG_HOME"] = _config_home = tempfile.mkdtemp(prefix="llm_pymarl_test_config_")
atexit.register(shutil.rmtree, _config_home, ignore_errors=True)


import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _sigint_handler_restored():
    """Each test leaves SIGINT's and SIGTERM's handlers as it found them: src/main.py, run in-process, keeps its
    exit-at-once handlers after a Ctrl-C or SIGTERM (right for the one run of a process, wrong for the next test)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in handlers.items():
        if signal.getsignal(s) is not handler:
            signal.signal(s, handler)


@pytest.fixture
def sigint_default():
    """SIGINT with Python's default handler, as in a terminal (a test runner started in the background, or a CI
    runner, may have it ignored or handled otherwise, where the code under test rightly leaves it alone)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Tests marked `long` first (stable otherwise): with -n 2, --dist loadfile and --no-loadscope-reorder their files
    are handed out before the many short ones, which then fill in around them, instead of long files ending the run
    (xdist's default order is the files with most tests first, which put the one-test local-model files last)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
