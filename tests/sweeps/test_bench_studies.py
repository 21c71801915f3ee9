"""bench/learning_curves.py and bench/offline_learning.py run sweep files changed by their options (bench/study.py):
the derived sweep files build and check like any sweep file (no Ray needed)."""
import importlib.util
import json
import os

from sweeps.spec import expand, load_sweep, validate
from utils.paths import REPO_ROOT


def load_study():
    spec = importlib.util.spec_from_file_location("bench_study", os.path.join(REPO_ROOT, "bench", "study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benches_defaults_are_the_sweep_files_themselves(tmp_path):
    study = load_study()
    assert study.changes("qllm_lbf") == {} and study.changes("qllm_climbing", with_={"t_max": 20000}) == {}
    datasets = [f"results/datasets/Foraging-8x8-2p-2f-coop-v3/{d}.h5" for d in ("expert", "mix_200e_1000p")]
    assert study.changes("offline_lbf", envs=["lbf_8x8_2p_2f_coop"], grid={"offline_dataset": datasets}) == {}
    path, name = study.derive("qllm_lbf", {}, str(tmp_path / "res"), str(tmp_path))
    spec = load_sweep(path)
    assert name == spec["name"] == "qllm_lbf" and spec["with"]["local_results_path"] == str(tmp_path / "res")


def test_options_make_a_sweep_of_its_own_that_checks(tmp_path):
    study = load_study()
    diff = study.changes("qllm_climbing", seeds=[1], with_={"t_max": 2000, "test_interval": 1000, "log_interval": 500})
    assert diff == {"seeds": [1], "with": {"t_max": 2000, "log_interval": 500}}  # test_interval: unchanged
    path, name = study.derive("qllm_climbing", diff, str(tmp_path / "res"), str(tmp_path))
    (tmp_path / "other").mkdir()
    assert name.startswith("qllm_climbing-")
    assert name == study.derive("qllm_climbing", diff, "elsewhere", str(tmp_path / "other"))[1]  # where: not in it
    trials = validate(expand(load_sweep(path)))
    assert [t["id"] for t in trials] == ["qmix-climbing-s1", "vdn-climbing-s1", "qllm_gate_on-s1", "qllm_gate_off-s1"]
    assert {t["t_max"] for t in trials} == {2000} and trials[2]["overrides"]["igm_gate"] is True
    assert all(t["overrides"]["local_results_path"] == str(tmp_path / "res") for t in trials)
    json.loads(open(path).read())  # the derived file is JSON (read as YAML)


def test_offline_options_change_the_grid(tmp_path):
    study = load_study()
    diff = study.changes("offline_lbf", algs=["bc"], envs=["climbing"], seeds=[1, 2],
                         with_={"offline_steps": 60, "test_nepisode": 4},
                         grid={"offline_dataset": ["/data/climbing/expert.h5"]})
    path, _ = study.derive("offline_lbf", diff, str(tmp_path), str(tmp_path))
    trials = expand(load_sweep(path))
    assert [(t["alg"], t["env"], t["seed"], t["grid"]["offline_dataset"]) for t in trials] == [
        ("bc", "climbing", 1, "/data/climbing/expert.h5"), ("bc", "climbing", 2, "/data/climbing/expert.h5")]
    assert trials[0]["overrides"]["offline_steps"] == 60 and trials[0]["overrides"]["test_nepisode"] == 4
