"""Sweeps on a local Ray (one Ray for the module): runs and manifest, a failing trial, resume after kill -9."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sweep_helpers import sacred_runs, sweep_file

from sweeps import driver
from sweeps.manifest import checkpoint_steps, read_manifest, sweep_folder, trial_state
from sweeps.spec import expand, validate
from utils.files import load_json
from utils.paths import REPO_ROOT

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    driver.start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_trials_run_at_the_drivers_priority(local_ray):
    """Ray nices workers (and so the trial processes they start) to 15 by default: on a shared machine a trial then
    got a fraction of a core beside any ordinary process. The local Ray of start_ray keeps the driver's niceness."""
    @local_ray.remote(num_cpus=1)
    def niceness():
        return os.nice(0)

    assert local_ray.get(niceness.remote()) == os.nice(0)


def test_a_2x2_sweep_writes_four_sacred_runs_and_a_manifest_pointing_at_them(tmp_path, local_ray, capsys,
                                                                             sigint_default):
    spec = sweep_file(tmp_path, "two_by_two", algs=["qmix", "vdn"], envs=["matrix_game"], seeds=2)
    sweep = driver.prepare(spec)
    assert driver.run(sweep) == 0
    # Tune's fit() leaves its own SIGINT handler in place (it only sets an event): the driver puts Python's back, so
    # a Ctrl-C while the manifest is written or a report runs still stops the process
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    runs = sacred_runs(str(tmp_path / "results"))
    assert len(runs) == 4
    manifest = read_manifest(sweep_folder(spec))
    assert manifest["status"] == "COMPLETED" and len(manifest["trials"]) == 4
    assert sorted(r["sacred_run"] for r in manifest["trials"]) == runs
    for r in manifest["trials"]:
        assert r["status"] == "COMPLETED" and r["node_id"] and r["attempts"] == 1 and r["error"] is None
        config = load_json(os.path.join(r["sacred_run"], "config.json"))
        assert (config["name"], config["seed"], config["label"]) == (r["alg"], r["seed"], r["label"])
        assert config["torch_threads"] == 1 and config["use_cuda"] is False
        assert load_json(os.path.join(r["sacred_run"], "run.json"))["status"] == "COMPLETED"
        assert r["t_env"] >= 1000 and r["value"] is not None and checkpoint_steps(r["model_dir"])
    out = capsys.readouterr().out
    assert out.count("COMPLETED ") == 4 and "4/4 trials completed" in out  # one line per status change (no TTY)
    with pytest.raises(driver.ConfigError, match="already has a manifest.*--resume"):
        driver.prepare(spec)


def test_a_trial_that_raises_is_reported_and_the_others_complete(tmp_path, local_ray, capsys):
    """A failure that may pass (a dataset file HDF5 cannot open: a network disk that was away) is retried. (A
    dataset that does not exist is a user error that is not: the test below.)"""
    unreadable = tmp_path / "unreadable.h5"
    unreadable.write_bytes(b"not hdf5")
    spec = sweep_file(tmp_path, "faulty", retries=1, entries=[
        {"alg": "bc", "env": "matrix_game", "name": "broken", "with": {"offline_dataset": str(unreadable)}},
        {"alg": "qmix", "env": "matrix_game"}])
    sweep = driver.prepare(spec)
    assert driver.run(sweep) == 1
    broken, good = read_manifest(sweep_folder(spec))["trials"]
    assert broken["status"] == "ERROR" and broken["attempts"] == 2  # retries: 1
    assert f"{unreadable}: not a readable HDF5 file" in broken["error"]
    assert broken["sacred_run"] and load_json(os.path.join(broken["sacred_run"], "run.json"))["status"] == "FAILED"
    failure = load_json(os.path.join(broken["sacred_run"], "info.json"))["failure"]
    assert failure["error"] == "DatasetError" and failure["repeats_on_retry"] is False
    assert f"{unreadable}: not a readable HDF5 file" in failure["message"]
    assert good["status"] == "COMPLETED"
    out = capsys.readouterr().out
    assert "ERROR" in out and "1/2 trials completed" in out and "broken-s0 ERROR" in out


def test_a_failure_a_rerun_would_repeat_is_not_retried(tmp_path, local_ray, capsys):
    """A run that fails with a DatasetError (repeats_on_retry) records it in its info, and Tune's retries of the trial
    in this sweep call refuse at once instead of running it again (here on a worker reused after another trial);
    `--resume` is a new call and runs it again."""
    import h5py

    broken = tmp_path / "empty.h5"
    h5py.File(broken, "w").close()  # HDF5, but not a dataset of this project: no schema_version
    spec = sweep_file(tmp_path, "repeats", retries=2, max_concurrent=1, entries=[
        {"alg": "qmix", "env": "matrix_game"},
        {"alg": "bc", "env": "matrix_game", "name": "empty", "with": {"offline_dataset": str(broken)}}])
    sweep = driver.prepare(spec)
    assert driver.run(sweep) == 1
    good, r = read_manifest(sweep_folder(spec))["trials"]
    # retries: 2 would have started two more runs of the trial (the test above: a retried trial runs again)
    assert good["status"] == "COMPLETED" and r["status"] == "ERROR" and r["attempts"] == 1
    assert len(sacred_runs(str(tmp_path / "results"))) == 2
    failure = load_json(os.path.join(r["sacred_run"], "info.json"))["failure"]
    assert failure["error"] == "DatasetError" and failure["repeats_on_retry"] is True
    assert "no schema_version attr" in failure["message"]
    assert load_json(os.path.join(r["sacred_run"], "not_retried.json"))["call"].startswith("run_")
    last = r["error"].strip().splitlines()[-1]
    assert last.startswith("DatasetError (not retried") and "no schema_version attr" in last
    assert "empty-s0 ERROR (DatasetError (not retried" in capsys.readouterr().out
    sweep.lock.release()  # as the driver's exit would
    assert driver.run(driver.prepare(spec, resume=True)) == 1  # a new call: the trial runs once more
    assert len(sacred_runs(str(tmp_path / "results"))) == 3
    assert read_manifest(sweep_folder(spec))["trials"][1]["attempts"] == 2


def test_a_config_error_found_in_the_run_is_not_retried(tmp_path, local_ray, capsys):
    """A config error found only once the run builds (main.py exits 2 and removes the run's folder) would repeat on a
    retry with the same settings: this sweep call marks the trial in the sweep folder and does not run it again;
    `--resume` is a new call and runs it again."""
    folder = tmp_path / "not_a_file.h5"
    folder.mkdir()
    spec = sweep_file(tmp_path, "config_error", retries=2, max_concurrent=1, entries=[
        {"alg": "bc", "env": "climbing", "name": "folder", "with": {"offline_dataset": str(folder)}}])
    sweep = driver.prepare(spec)
    assert driver.run(sweep) == 1
    (r,) = read_manifest(sweep_folder(spec))["trials"]
    assert r["status"] == "ERROR" and r["attempts"] == 1  # retries: 2 would have run it twice more
    assert sacred_runs(str(tmp_path / "results")) == []  # main.py removed the failed run's folder
    last = r["error"].strip().splitlines()[-1]
    assert last.startswith("config error (not retried") and "is a folder; give a dataset file" in last
    assert load_json(os.path.join(sweep_folder(spec), "not_retried", f"{r['id']}.json"))["call"].startswith("run_")
    assert "folder-s0 ERROR (config error (not retried" in capsys.readouterr().out
    sweep.lock.release()  # as the driver's exit would
    assert driver.run(driver.prepare(spec, resume=True)) == 1  # a new call: the trial runs once more
    assert read_manifest(sweep_folder(spec))["trials"][0]["attempts"] == 2


def _processes_with(text):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _end_session(sid):
    """SIGKILL the processes left in session `sid` (the killed driver's, started by this test), by their ids."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


# long enough that the long trial is still running when the short one has completed, even on an idle machine (at 12000
# steps it once finished first: 2026-12-03)
LONG_T_MAX = 40000


@pytest.mark.long
def test_resume_after_kill_9_of_the_driver(tmp_path, local_ray):
    spec = sweep_file(tmp_path, "killed", max_concurrent=2, entries=[
        {"alg": "qmix", "env": "matrix_game", "name": "short"},
        {"alg": "vdn", "env": "matrix_game", "name": "long", "with": {"t_max": LONG_T_MAX}}])
    proc = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "src", "sweep.py"), spec["file"],
                             "--num-cpus", "2"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = sweep_folder(spec)
    deadline = time.time() + 60
    short = long = None
    while time.time() < deadline:
        manifest = read_manifest(folder)
        if manifest:
            short, long = manifest["trials"]
            long_dir = trial_state(long)["model_dir"]
            if trial_state(short)["status"] == "COMPLETED" and long_dir and checkpoint_steps(long_dir)[-1] >= 1000:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the sweep did not get going in 60 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    label = f"sweep:killed:{manifest['uid']}:"
    deadline = time.time() + 30
    while _processes_with(label) and time.time() < deadline:  # the trial's run dies with its Ray worker
        time.sleep(0.2)
    assert not _processes_with(label), "a trial's run outlived the killed driver"
    _end_session(proc.pid)  # the killed driver's own Ray (its agents would go by themselves within a minute or two)
    interrupted = trial_state(long)
    assert interrupted["status"] == "INTERRUPTED" and len(interrupted["sacred_runs"]) == 1
    checkpoint = checkpoint_steps(interrupted["model_dir"])[-1]
    assert checkpoint < LONG_T_MAX

    sweep = driver.prepare(spec, resume=True)
    assert [r["status"] for r in sweep.records] == ["COMPLETED", "PENDING"]
    assert driver.run(sweep) == 0
    short_state, long_state = trial_state(short), trial_state(long)
    assert len(short_state["sacred_runs"]) == 1  # not run again
    assert len(long_state["sacred_runs"]) == 2 and long_state["status"] == "COMPLETED"
    info = load_json(os.path.join(long_state["sacred_runs"][1], "info.json"))
    assert info["resumed_from"]["step"] == checkpoint
    assert info["resumed_from"]["model_dir"] == interrupted["model_dir"] == long_state["model_dir"]
    assert min(info["episode_T"]) > checkpoint and long_state["t_env"] >= LONG_T_MAX  # t_env continues
    assert len(sacred_runs(str(tmp_path / "results"))) == 3
    manifest = read_manifest(folder)
    assert manifest["status"] == "COMPLETED"
    assert manifest["trials"][1]["sacred_runs"] == long_state["sacred_runs"]


def test_ctrl_c_of_the_driver_lets_the_running_trial_save_first(tmp_path):
    """The driver passes its first Ctrl-C on to the trial's run, which saves a checkpoint where it stops and ends
    INTERRUPTED (not killed with its Ray worker, losing all since its last periodic checkpoint); no retry follows."""
    never = 10 ** 9  # the run would not end by itself, nor save on its interval: only the stop saves
    spec = sweep_file(tmp_path, "stopped", entries=[{"alg": "vdn", "env": "matrix_game", "name": "long",
                                                      "with": {"t_max": never, "save_model_interval": never}}])
    proc = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "src", "sweep.py"), spec["file"],
                             "--num-cpus", "1"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    folder = sweep_folder(spec)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            manifest = read_manifest(folder)
            run = manifest and trial_state(manifest["trials"][0])["sacred_run"]
            info = load_json(os.path.join(run, "info.json")) if run else None
            if info and max(info.get("episode_T") or [0]) >= 1000:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not get going in 90 s")
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        _end_session(proc.pid)
    assert "1 running trial(s) here save a checkpoint and end first" in out, out
    assert proc.returncode == 130  # stopped by Ctrl-C, as a shell reads it
    state = trial_state(read_manifest(folder)["trials"][0])
    assert load_json(os.path.join(state["sacred_run"], "run.json"))["status"] == "INTERRUPTED"
    assert len(state["sacred_runs"]) == 1  # not retried
    assert checkpoint_steps(state["model_dir"])[-1] >= 1000  # saved where it stopped
    assert read_manifest(folder)["trials"][0]["status"] == "INTERRUPTED"
    assert not os.path.exists(os.path.join(folder, "stopping"))


def test_validation_covers_every_trial_before_ray(tmp_path):
    spec = sweep_file(tmp_path, "valid", algs=["qmix"], envs=["matrix_game"], seeds=[3, 4])
    trials = validate(expand(spec))
    assert [t["seed"] for t in trials] == [3, 4] and all(t["results"] == str(tmp_path / "results") for t in trials)
    assert json.dumps(trials)  # trials travel to Ray workers as plain data
