"""Checkpoints load with weights_only=True; unfinished or damaged ones are never taken for complete."""
import errno
import os
import random
import zipfile

import numpy as np
import pytest
import torch as th

from learners.common import load_state, save_state
from utils.checkpoint import (
    CheckpointError,
    DamagedCheckpoint,
    find_checkpoint,
    load_file,
    load_run_state,
    save_checkpoint,
)
from utils.config import ConfigError
from utils.files import temp_path
from utils.seeding import rng_state, set_rng_state


class TinyLearner:
    def save_models(self, path):
        save_state(path, "agent", {"w": th.arange(2000.0)})
        save_state(path, "opt", {"steps": 3, "exp_avg": [th.ones(3)]})


def make_run(tmp_path, steps=(5, 155, 305)):
    run = tmp_path / "models" / "run"
    for step in steps:
        save_checkpoint(TinyLearner(), str(run / str(step)), {"t_env": step, "rng": rng_state()})
    return run


def truncate(file):
    data = open(file, "rb").read()
    open(file, "wb").write(data[: len(data) // 2])


def test_saved_checkpoints_load_with_weights_only_and_restore_the_rngs(tmp_path):
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # a cached gaussian is part of numpy's state
    run = make_run(tmp_path, steps=(5,))
    expected = (random.random(), np.random.normal(), np.random.rand(3).tolist(), th.rand(2).tolist())
    state = load_run_state(find_checkpoint(str(run)))
    assert state["t_env"] == 5
    set_rng_state(state["rng"])
    assert (random.random(), np.random.normal(), np.random.rand(3).tolist(), th.rand(2).tolist()) == expected
    assert load_state(str(run / "5"), "opt")["steps"] == 3
    assert sorted(os.listdir(run)) == ["5"]  # no temps left


def test_older_run_state_with_a_numpy_rng_array_still_loads(tmp_path):
    os.makedirs(tmp_path / "7")
    th.save({"t_env": 7, "rng": {"numpy": np.random.get_state()}}, tmp_path / "7" / "run_state.th")
    assert load_run_state(str(tmp_path / "7"))["rng"]["numpy"][1].dtype == np.uint32


def test_find_checkpoint_never_takes_a_temp(tmp_path):
    run = make_run(tmp_path, steps=(5,))
    live = temp_path(str(run / "305"))  # ours: a live writer
    for tmp in (live, str(run / "155.tmp")):  # and a name from before temps named their writer
        os.makedirs(tmp)
        TinyLearner().save_models(tmp)
    assert find_checkpoint(str(run)) == str(run / "5")
    assert find_checkpoint(str(run), load_step=300) == str(run / "5")
    with pytest.raises(CheckpointError, match="unfinished checkpoint"):
        find_checkpoint(live)


@pytest.mark.parametrize("name", ["agent.th", "run_state.th"])
def test_damaged_file_is_named_with_the_load_step_that_skips_it(tmp_path, name):
    run = make_run(tmp_path)
    truncate(run / "305" / name)
    with pytest.raises(CheckpointError) as e:
        find_checkpoint(str(run))
    assert str(run / "305" / name) in str(e.value) and "load_step=155" in str(e.value)
    assert find_checkpoint(str(run), load_step=155) == str(run / "155")
    # loading the file directly says the same
    with pytest.raises(CheckpointError) as e:
        load_file(str(run / "305" / name))
    assert str(run / "305" / name) in str(e.value) and "load_step=155" in str(e.value)


def test_damaged_first_checkpoint_says_there_is_none_earlier(tmp_path):
    run = make_run(tmp_path, steps=(5,))
    truncate(run / "5" / "opt.th")
    with pytest.raises(CheckpointError, match="no earlier checkpoint") as e:
        load_state(str(run / "5"), "opt")
    assert str(run / "5" / "opt.th") in str(e.value)


@pytest.mark.parametrize("content, says", [
    (b"loss 0.1 at step 305\n", "is not a checkpoint file: torch.save did not write it (it holds text: 'loss 0.1 at "
                                 "step 305\\n')"),
    (b"hello", "is not a checkpoint file: torch.save did not write it (it holds text: 'hello')"),
    (b"", "is empty (0 bytes): it is damaged"),
    (b"\x00\x01\x02binary", "is not a checkpoint file: torch.save did not write it (it starts with"),
    ("zip", "is not a checkpoint file: a zip archive, but not one torch.save writes (it has no data.pkl)"),
    ("half", "is damaged: cut short or corrupted (BadZipFile"),
    ("legacy_half", "is damaged or not a checkpoint file: torch cannot read it ("),
])
def test_damaged_and_foreign_files_say_so(tmp_path, content, says):
    """Review finding: a text file said it "holds Python objects beyond tensors", a 5-byte file "KeyError: 101".
    Now each says the file is damaged or not a checkpoint, names it and the checkpoint to resume from instead; the
    error is a config error (one line, exit status 2, in a run)."""
    run = make_run(tmp_path)
    file = run / "305" / "agent.th"
    if content == "zip":
        with zipfile.ZipFile(file, "w") as z:
            z.writestr("notes.txt", "not a checkpoint")
    elif content == "half":
        truncate(file)
    elif content == "legacy_half":
        th.save({"w": th.arange(2000.0)}, file, _use_new_zipfile_serialization=False)
        truncate(file)
    else:
        file.write_bytes(content)
    checks = [lambda: load_file(str(file))]
    if content != "legacy_half":  # the older format has no checksums: only loading it finds the damage
        checks.append(lambda: find_checkpoint(str(run)))
    for check in checks:
        with pytest.raises(DamagedCheckpoint) as e:
            check()
        assert isinstance(e.value, ConfigError)
        assert f"checkpoint file {file} {says}" in str(e.value), str(e.value)
        assert f"pass checkpoint_path={run} load_step=155" in str(e.value)
        assert "KeyError" not in str(e.value) and "Python objects" not in str(e.value)


def test_python_objects_are_refused(tmp_path):
    os.makedirs(tmp_path / "5")
    th.save({"thing": TinyLearner()}, tmp_path / "5" / "learner.th")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_state(str(tmp_path / "5"), "learner")


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"),
                                   OSError(errno.ESTALE, "Stale file handle"), TimeoutError("timed out")])
def test_a_passing_read_error_is_not_a_damaged_checkpoint(tmp_path, monkeypatch, error):
    """An I/O error (a failing or network disk) is not the file's fault: it stays an OSError, which fails the run as
    an error a sweep retries, never a DamagedCheckpoint (a config error: exit status 2, run folder removed)."""
    import builtins

    import utils.checkpoint as checkpoint

    run = make_run(tmp_path)
    file = str(run / "305" / "agent.th")
    real_open = builtins.open

    def failing_open(path, *args, **kwargs):
        if os.fspath(path).endswith(".th"):
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    with pytest.raises(OSError) as e:
        find_checkpoint(str(run))
    assert e.value is error and not isinstance(e.value, DamagedCheckpoint)
    monkeypatch.setattr(checkpoint.th, "load", lambda *a, **k: (_ for _ in ()).throw(error))
    with pytest.raises(OSError) as e:
        load_file(file)
    assert e.value is error
    monkeypatch.setattr(builtins, "open", real_open)  # the file reads again: th.load's error alone says so
    with pytest.raises(OSError) as e:
        load_file(file)
    assert e.value is error


def test_a_missing_or_unreadable_file_is_named_as_before(tmp_path):
    run = make_run(tmp_path)
    (run / "305" / "agent.th").unlink()
    (run / "305" / "agent.th").mkdir()  # a folder where the file should be
    with pytest.raises(DamagedCheckpoint, match=r"agent.th cannot be read \(IsADirectoryError"):
        load_file(str(run / "305" / "agent.th"))
