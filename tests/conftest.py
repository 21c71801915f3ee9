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
