"""Sweep files and the validation of every trial before any starts (no Ray needed)."""
import glob
import os
import re

import pytest
import yaml
from sweep_helpers import sacred_runs, sweep_file

import sweep as sweep_cli
from sweeps.spec import SWEEP_DIR, expand, load_sweep, validate
from utils.config import ConfigError

FILES = sorted(glob.glob(os.path.join(SWEEP_DIR, "*.yaml")))


def test_the_shipped_studies_are_there():
    names = {os.path.basename(f)[:-5] for f in FILES}
    assert {"qllm_lbf", "offline_lbf", "online_core"} <= names


def shared_base(path):
    """A file that only holds settings other sweep files inherit (config/sweeps/lca_base.yaml): no trials of its own."""
    raw = yaml.safe_load(open(path)) or {}
    return not raw.get("entries") and not raw.get("algs") and not raw.get("inherit")


@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_every_trial_of_every_sweep_file_builds(path):
    if shared_base(path):  # a base: some sweep file inherits it, and it has no trials by itself
        name = os.path.basename(path)[:-5]
        heirs = [f for f in FILES if (yaml.safe_load(open(f)) or {}).get("inherit") == name]
        assert heirs, f"{name} has no trials and no sweep file inherits it"
        with pytest.raises(ConfigError, match="no trials"):
            expand(load_sweep(path))
        return
    trials = validate(expand(load_sweep(path)))
    assert trials and len({t["id"] for t in trials}) == len(trials)
    for t in trials:
        assert t["t_max"] > 0 and t["name"] and t["env_label"]


def test_study_sizes():
    sizes = {name: len(expand(load_sweep(name))) for name in ("qllm_lbf", "offline_lbf", "online_core")}
    assert sizes == {"qllm_lbf": 3 * 5, "offline_lbf": 5 * 2 * 3, "online_core": 4 * 2 * 5}
    qllm = expand(load_sweep("qllm_lbf"))
    assert {t["overrides"]["t_max"] for t in qllm} == {400000}


def test_inherit_and_grid_expand(tmp_path):
    sweep_file(tmp_path, "base", algs=["qmix"], envs=["matrix_game"], seeds=2, grid={"lr": [0.001, 0.002]})
    (tmp_path / "child.yaml").write_text("inherit: base\nseeds: [7]\ngrid: {hidden_dim: [16, 32]}\n")
    spec = load_sweep(str(tmp_path / "child.yaml"))
    trials = expand(spec)
    assert spec["name"] == "child" and [t["seed"] for t in trials] == [7] * 4
    assert {(t["grid"]["lr"], t["grid"]["hidden_dim"]) for t in trials} == {(a, b) for a in (0.001, 0.002)
                                                                           for b in (16, 32)}


def test_an_unknown_key_in_one_grid_entry_fails_before_any_trial_starts(tmp_path, capsys):
    spec = sweep_file(tmp_path, "bad", seeds=2, entries=[
        {"alg": "qmix", "env": "matrix_game"},
        {"alg": "vdn", "env": "matrix_game", "grid": {"lrr": [0.001, 0.01]}}])
    with pytest.raises(ConfigError, match=r"entry 2 \(vdn on matrix_game\), trial vdn-matrix_game-lrr=0.001-s0 "
                                          r"\(grid lrr=0.001\): unknown config key 'lrr'.*Closest valid keys: lr"):
        validate(expand(spec))
    assert sweep_cli.main(["sweep.py", spec["file"]]) == 2  # the command: exit 2 before Ray or any run starts
    assert "unknown config key 'lrr'" in capsys.readouterr().err
    assert sacred_runs(str(tmp_path / "results")) == []
    assert not os.path.exists(tmp_path / "results" / "sweeps")


def test_an_unknown_env_or_sweep_key_is_named(tmp_path):
    spec = sweep_file(tmp_path, "badenv", algs=["qmix"], envs=["matrix_gme"])
    with pytest.raises(ConfigError, match="trial qmix-matrix_gme-s0.*no config 'matrix_gme'.*matrix_game"):
        validate(expand(spec))
    (tmp_path / "typo.yaml").write_text("algs: [qmix]\nenvs: [lbf]\nseed: 3\n")
    with pytest.raises(ConfigError, match="unknown sweep key 'seed'.*seeds"):
        load_sweep(str(tmp_path / "typo.yaml"))


@pytest.mark.parametrize("text, match", [
    ("algs: qmix\nenvs: [matrix_game]\n", r"algs must be a list \(e.g. \[qmix\]\)"),
    ("algs: [qmix]\nenvs: [matrix_game]\nseeds: [1, 1]\n", r"seeds \[1, 1\] repeat a seed"),
    ("algs: [qmix]\nenvs: [matrix_game]\ngrid: {lr: [0.1, 0.1]}\n", "grid axis 'lr' lists 0.1 twice"),
    ("algs: [qmix]\nenvs: [matrix_game]\ngrid: {seed: [7, 8]}\n", "'seed' is set by the sweep .*from `grid`"),
    ("algs: [qmix]\nenvs: [matrix_game]\nretries: -1\n", "retries must be an integer >= 0"),
    ("algs: [qmix]\nenvs: [matrix_game]\nmax_concurrent: 0\n", "max_concurrent must be null"),
    ("algs: [qmix]\nenvs: [matrix_game]\nmode: maximum\n", "mode must be max or min"),
    ("algs: [qmix]\nenvs: [matrix_game]\ncpus_per_trial: two\n", "cpus_per_trial and gpus_per_trial must be numbers"),
    ("algs: [qmix]\nenvs: [matrix_game]\nwith: [t_max, 100]\n", "`with` must be a mapping"),
    ("entries:\n  - {alg: qmix, env: matrix_game}\n  - {alg: qmix, env: matrix_game}\n",
     r"entry 2 \(qmix on matrix_game\) runs the same trial as .*entry 1"),
])
def test_sweep_files_that_would_run_a_trial_twice_or_misconfigure_ray_are_refused(tmp_path, text, match):
    """Caught before any trial starts: repeated seeds, grid values or entries (one run counted as two seeds),
    keys the sweep sets itself in `grid`, Ray settings out of range, and values of the wrong type."""
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        validate(expand(load_sweep(str(tmp_path / "bad.yaml"))))


def test_inline_mistakes_are_refused(capsys):
    for extra, message in ((["--seeds", "0"], "seeds must be >= 1, got 0"),
                           (["--grid", "lr=[0.1]", "--grid", "lr=[0.2]"], "--grid lr=... is given twice"),
                           (["--name", "../../x"], "the name must be a folder name")):
        assert sweep_cli.main(["sweep.py", "--config=qmix", "--env-config=matrix_game", *extra, "--check"]) != 0
        assert message in capsys.readouterr().err


def test_inline_form_and_check(capsys):
    argv = ["sweep.py", "--config=qmix,vdn", "--env-config=matrix_game", "--seeds", "2", "--grid", "lr=[0.001,0.002]",
            "--check", "with", "t_max=500"]
    assert sweep_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "8 trials, every config checked" in out and "qmix-matrix_game-lr=0.002-s1" in out
    assert "t_max=500" in out and "torch_threads=1" in out and "use_cuda=False" in out


def test_a_gpu_share_turns_use_cuda_on(capsys, tmp_path):
    """gpus_per_trial (fractional: 4 trials per GPU) is the trial's Ray resource, and its runs get use_cuda=True."""
    argv = ["sweep.py", "--config=qmix", "--env-config=matrix_game", "--gpus-per-trial", "0.25", "--check", "with",
            "t_max=500"]
    assert sweep_cli.main(argv) == 0
    assert "use_cuda=True" in capsys.readouterr().out
    spec = sweep_file(tmp_path, "gpu", algs=["qmix"], envs=["matrix_game"], seeds=4, gpus_per_trial=0.25)
    trials = expand(spec)
    assert len(trials) == 4 and all(t["resources"]["gpu"] == 0.25 for t in trials)


def test_progress_is_a_line_per_status_change_or_a_live_table_on_a_terminal():
    import io
    from types import SimpleNamespace

    from sweeps.driver import Display

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    records = [{"index": i, "id": f"qmix-lbf-s{i}", "status": s, "t_env": t, "value": v, "t_max": 1000,
                "node_id": "ab" * 20, "hostname": "node1", "error": None}
               for i, (s, t, v) in enumerate([("RUNNING", 500, 0.25), ("PENDING", None, None)])]
    sweep = SimpleNamespace(name="demo", metric="test_return_mean", records=records)
    plain = io.StringIO()
    Display(sweep, plain).status_changed(records[0])
    Display(sweep, plain).progress(records[0])  # no line for progress without a status change
    assert plain.getvalue().count("\n") == 1
    assert "demo RUNNING   qmix-lbf-s0  t_env 500  test_return_mean 0.25 node abababab (node1)" in plain.getvalue()
    term = Terminal()
    display = Display(sweep, term)
    display.progress(records[0])
    display.progress(records[0])
    out = term.getvalue()
    assert out.count("sweep demo: 0/2 done, 1 running, 0 failed") == 2 and "\x1b[1A\x1b[2K" in out
    assert "qmix-lbf-s1" in out and "PENDING" in out


def test_a_metric_the_runs_never_log_is_named_once(tmp_path):
    """A misspelt sweep metric leaves every value empty: the first completed trial whose run logged other metrics
    says so, once; a run that logs no metrics at all (a label run) says nothing."""
    import io
    import json
    from types import SimpleNamespace

    from sweeps.driver import Display, metric_note

    run = tmp_path / "1"
    run.mkdir()
    (run / "info.json").write_text(json.dumps({"test_return_mean": [1.0], "test_return_mean_T": [0]}))
    done = {"index": 0, "id": "qmix-lbf-s0", "status": "COMPLETED", "t_env": 10, "value": None, "t_max": 10,
            "error": None, "sacred_run": str(run)}
    sweep = SimpleNamespace(name="demo", metric="test_retrun_mean", records=[done, {**done, "id": "qmix-lbf-s1"}])
    plain = io.StringIO()
    display = Display(sweep, plain)
    display.status_changed(done)
    display.status_changed(sweep.records[1])
    out = plain.getvalue()
    assert out.count("completed without logging 'test_retrun_mean'") == 1 and "logs test_return_mean)" in out
    assert metric_note("test_return_mean", done) is None
    (run / "info.json").write_text(json.dumps({"reward_loss": [0.5], "reward_loss_T": [0]}))  # never evaluates
    assert metric_note("test_retrun_mean", done) is None


def test_without_ray_the_command_says_how_to_install_it():
    """ray_missing's message, and import_ray exits with it where `import ray` fails (a Python without Ray)."""
    from helpers import run_without
    from sweeps import driver

    message = r"Ray is not installed.*pip install 'ray\[tune\]==2.60.0'.*\(No module named 'ray'\)"
    with pytest.raises(SystemExit, match=f"^{message}$"):
        raise driver.ray_missing(ModuleNotFoundError("No module named 'ray'"))
    proc = run_without("ray", "from sweeps.driver import import_ray\nimport_ray()")
    assert proc.returncode == 1 and re.fullmatch(message, proc.stderr.strip().splitlines()[-1]), proc.stderr


def test_one_driver_per_sweep(tmp_path):
    """A second driver of the same sweep (e.g. `--resume` in another terminal while the first still runs) is refused
    instead of running every pending trial twice; the lock goes with the driver."""
    from sweeps import driver

    spec = sweep_file(tmp_path, "locked", algs=["qmix"], envs=["matrix_game"], seeds=1)
    first = driver.prepare(spec)
    with pytest.raises(ConfigError, match="another driver is running sweep 'locked'"):
        driver.prepare(spec)
    first.lock.release()
    assert driver.prepare(spec).lock is not None
