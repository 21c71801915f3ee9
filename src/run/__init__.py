"""Run modes by name (`run` in the config)."""
from run.evaluate import run_evaluate
from run.online import run_online

REGISTRY = {
    "online": run_online,
    "evaluate": run_evaluate,
}
