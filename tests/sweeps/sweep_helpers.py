"""Small sweeps on the matrix game for the sweep tests."""
import os

import yaml

from sweeps.spec import load_sweep

FAST = {"test_interval": 500, "log_interval": 500, "runner_log_interval": 500, "learner_log_interval": 500,
        "save_model_interval": 500, "test_nepisode": 4, "use_tensorboard": False, "t_max": 1000}


def sweep_file(tmp_path, name, **spec):
    """A sweep file in tmp_path whose runs write under tmp_path/results; returns its loaded spec."""
    spec.setdefault("with", {})
    spec["with"] = {**FAST, "local_results_path": str(tmp_path / "results"), **spec["with"]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_sweep(str(path))


def sacred_runs(results):
    """Every Sacred run folder under results/sacred/<name>/<env>/<id>."""
    base = os.path.join(results, "sacred")
    return sorted(os.path.join(base, n, e, i) for n in os.listdir(base) for e in os.listdir(os.path.join(base, n))
                  for i in os.listdir(os.path.join(base, n, e)) if i.isdigit()) if os.path.isdir(base) else []
