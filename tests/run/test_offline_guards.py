"""run=offline refuses data and settings it cannot train on, and says so when training went wrong: no episodes, a
dataset changed under a resumed run, bad data found mid-run, non-finite updates skipped and validation losses."""
import glob
import json
import os

import numpy as np

from helpers import constant_climbing_episodes, make_ctx, run_main, sacred_dir
from offline import DatasetWriter

LIMIT = 5
TINY = ["offline_steps=6", "offline_test_interval=3", "offline_log_interval=3", "offline_save_interval=3",
        "batch_size=4", "test_nepisode=2", f"env_args.episode_limit={LIMIT}", "hidden_dim=8"]


def write(path, arrays=None, n=8, **kw):
    """A climbing dataset of `arrays` (default: n episodes playing (0, 0), labelled expert)."""
    ctx = make_ctx("qmix", "climbing", env_args={"episode_limit": LIMIT})
    with DatasetWriter(str(path), ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        if arrays is None:
            arrays = constant_climbing_episodes(n, 0, 0, limit=LIMIT)
        if len(arrays["obs"]):
            w.add_arrays(arrays, qualities="expert", **kw)
    ctx.runner.close_env()
    return str(path)


def test_a_dataset_of_no_episodes_is_a_dataset_error(tmp_path, capsys):
    empty = write(tmp_path / "empty.h5", {k: v[:0] for k, v in constant_climbing_episodes(1, 0, 0, LIMIT).items()})
    data = write(tmp_path / "data.h5")
    run_main(tmp_path / "a", "bc", "climbing", *TINY, f"offline_dataset={empty}", expect=2)
    err = capsys.readouterr().err
    assert f"offline_dataset: {empty} holds no episodes" in err and "Traceback" not in err
    run_main(tmp_path / "b", "bc_beta", "climbing", *TINY, f"offline_dataset={data}", f"offline_expert={empty}",
             expect=2)
    assert f"offline_expert: {empty} holds no episodes" in capsys.readouterr().err


def test_a_valid_fraction_that_leaves_no_training_episode_is_a_config_error(tmp_path, capsys):
    data = write(tmp_path / "data.h5", n=4)
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={data}", "offline_valid_fraction=0.9", expect=2)
    err = capsys.readouterr().err
    assert ("nothing left to train on: offline_valid_fraction=0.9 holds out all 4 episodes; give a smaller "
            "offline_valid_fraction (at most 0.75 keeps one training episode)") in err
    assert "Traceback" not in err and not os.path.isdir(tmp_path / "sacred" / "bc")


def test_every_update_skipped_fails_the_run_naming_the_cause_and_keeps_its_checkpoints(tmp_path, capsys):
    """Rewards of 1e30 make every OMIGA loss non-finite (a dataset of extreme rewards; legitimate settings): with
    on_nonfinite=skip_batch the run skipped all its updates and ended COMPLETED with checkpoints of the untrained
    model; now it fails (exit 1) saying so and naming the data's return range as the cause, its checkpoints kept.
    With on_nonfinite=stop the error names the same causes."""
    arrays = constant_climbing_episodes(8, 0, 0, limit=LIMIT)
    arrays["reward"][:, :LIMIT] = 1e30
    data = write(tmp_path / "data.h5", arrays)
    run_main(tmp_path / "skip", "omiga", "climbing", *TINY, f"offline_dataset={data}", "on_nonfinite=skip_batch",
             expect=1)
    err = capsys.readouterr().err
    assert "6 of the 6 gradient steps of this run skipped their update" in err and "the run trained nothing" in err
    assert "the data's episode returns span [5e+30, 5e+30] (extreme: rescale the rewards" in err
    assert "omiga_alpha=10" in err and "divides by zero" not in err
    (models,) = glob.glob(os.path.join(tmp_path, "skip", "models", "*"))
    assert {"3", "6"} <= set(os.listdir(models))
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "skip", "omiga", "climbing"), "info.json")))
    assert info["nonfinite_skips"] == {"skipped": 6, "updates": 6} and info["failure"]["repeats_on_retry"]
    run_main(tmp_path / "stop", "omiga", "climbing", *TINY, f"offline_dataset={data}", expect=1)
    err = capsys.readouterr().err
    assert "at gradient step 0; stopped before the optimiser step" in err
    assert "Look for the cause: the data's episode returns span [5e+30, 5e+30] (extreme" in err


def test_more_than_half_the_updates_skipped_is_a_warning_in_the_console_and_info():
    from types import SimpleNamespace

    from run.offline import check_skipped

    warnings = []
    log = SimpleNamespace(warning=warnings.append)
    ctx = SimpleNamespace(run_info={}, args=SimpleNamespace(model_dir="m", save_model=True))
    check_skipped(ctx, 5, 10, "causes", log)  # half: recorded, no warning
    assert ctx.run_info["nonfinite_skips"] == {"skipped": 5, "updates": 10} and not warnings
    check_skipped(ctx, 6, 10, "the data's returns", log)
    assert ctx.run_info["nonfinite_skips"]["warning"].startswith("6 of the 10 gradient steps")
    assert len(warnings) == 1 and "more than half" in warnings[0] and "the data's returns" in warnings[0]


def test_a_non_finite_validation_loss_follows_on_nonfinite(tmp_path, capsys, monkeypatch):
    """valid_bc_loss = inf was logged and the run completed: now on_nonfinite=stop fails the run naming the stat, the
    step and the held-out data; skip_batch warns and goes on."""
    from learners.bc_learner import BCLearner

    data = write(tmp_path / "data.h5")
    monkeypatch.setattr(BCLearner, "validation_loss", lambda self, batch: {"valid_bc_loss": float("inf")})
    run_main(tmp_path / "stop", "bc", "climbing", *TINY, f"offline_dataset={data}", "offline_valid_fraction=0.25",
             expect=1)
    err = capsys.readouterr().err
    assert "non-finite valid_bc_loss = inf at gradient step 0; stopped on the 0.25 of the episodes held out" in err
    run_main(tmp_path / "skip", "bc", "climbing", *TINY, f"offline_dataset={data}", "offline_valid_fraction=0.25",
             "on_nonfinite=skip_batch")
    out = "".join(capsys.readouterr())
    assert "non-finite validation loss valid_bc_loss = inf at gradient step 6" in out


def test_bad_data_found_mid_run_names_the_step_the_checkpoint_and_how_to_resume(tmp_path, capsys):
    arrays = constant_climbing_episodes(12, 0, 0, limit=LIMIT)
    arrays["obs"][11, 2, 0, 0] = np.nan
    data = write(tmp_path / "nan.h5", arrays)
    run_main(tmp_path, "bc", "climbing", *TINY, "offline_steps=200", f"offline_dataset={data}", "offline_lazy=True",
             expect=2)
    err = capsys.readouterr().err
    assert "'obs' is not finite (NaN or inf) at episode 11, step 2" in err and "Found at gradient step" in err
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    assert f"Last good checkpoint: {models}" in err and f"with checkpoint_path={models} offline_dataset=OUT.h5" in err


def test_batches_larger_than_their_data_are_said_once(tmp_path, capsys):
    data = write(tmp_path / "data.h5", n=8)
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={data}", "batch_size=40")
    out = "".join(capsys.readouterr())
    assert out.count("batch_size=40 is more than the 8 episodes of the data batches") == 1
    assert "every one about 5 times" in out


def test_a_reward_label_run_shows_the_labels_mean_return_beside_the_ground_truth(tmp_path, capsys):
    from offline.label_store import content_fingerprint, write_episode_labels

    data = write(tmp_path / "data.h5", n=8)
    reward = np.zeros((8, LIMIT + 1, 1), np.float32)
    reward[:, :LIMIT] = 2.0
    write_episode_labels(data, {"r_hat": reward}, {}, content_fingerprint(data))
    run_main(tmp_path, "omiga", "climbing", *TINY, f"offline_dataset={data}", "offline_reward=label:r_hat")
    out = "".join(capsys.readouterr())
    assert "Offline data: 8 training episodes (mean return of label:r_hat 10.000, ground truth 55.000)" in out
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "omiga", "climbing"), "info.json")))
    assert info["dataset"]["label_mean_return"] == 10.0 and info["dataset"]["mean_return"] == 55.0


def test_a_resume_refuses_a_dataset_that_changed_on_disk(tmp_path, capsys):
    """The same path with other episodes was resumed silently: now refused (exit 2) naming the file and the three ways
    on; labels written into the file since (the same episodes) are fine; offline_resume_changed_data=True resumes on
    the changed file and records it."""
    from offline.label_store import content_fingerprint, write_episode_labels

    data = write(tmp_path / "data.h5", n=8)
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={data}")
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    write_episode_labels(data, {"flag": np.ones(8, np.int64)}, {}, content_fingerprint(data))  # same episodes
    run_main(tmp_path, "bc", "climbing", *TINY, "offline_steps=9", f"offline_dataset={data}",
             f"checkpoint_path={models}")
    assert "holds the same episodes (labels or preference sets written since): resuming" in "".join(capsys.readouterr())
    os.remove(data)
    write(data, constant_climbing_episodes(8, 1, 1, limit=LIMIT))  # other episodes at the same path
    run_main(tmp_path, "bc", "climbing", *TINY, "offline_steps=12", f"offline_dataset={data}",
             f"checkpoint_path={models}", expect=2)
    err = capsys.readouterr().err
    assert f"{data} changed on disk since the checkpoint {os.path.join(models, '9')} was saved" in err
    assert "Restore the file, start a new run (leave out checkpoint_path), or resume on the changed file with " \
           "offline_resume_changed_data=True" in err
    run_main(tmp_path, "bc", "climbing", *TINY, "offline_steps=12", f"offline_dataset={data}",
             f"checkpoint_path={models}", "offline_resume_changed_data=True")
    assert "resuming on the changed file (offline_resume_changed_data=True)" in "".join(capsys.readouterr())
    assert "12" in os.listdir(models)


def test_the_non_finite_hints_flag_a_zero_only_for_a_weight_a_loss_divides_by():
    """cql_alpha=0 (OMAR without CQL) and misodice_alpha=0 are legitimate and no loss divides by them: they were
    named as 'a zero temperature or weight divides by zero'; only omiga_alpha (divided by) is flagged at 0."""
    from types import SimpleNamespace

    from run.offline import nonfinite_causes

    data = SimpleNamespace(returns=np.array([1.0, 3.0]))
    args = SimpleNamespace(offline_reward="", lr=5e-4, critic_lr=None, cql_alpha=0.0, misodice_alpha=0,
                           optim_alpha=0.99, bc_beta=0.0)
    text = nonfinite_causes(args, data)
    assert text == "the data's episode returns span [1, 3]; settings cql_alpha=0, lr=0.0005, misodice_alpha=0 " \
                   "(a smaller lr often helps)"
    args.omiga_alpha = 0.0
    assert "(omiga_alpha=0: the loss divides by it)" in nonfinite_causes(args, data)


def test_a_resume_refuses_a_label_it_reads_that_was_replaced_and_accepts_unrelated_labels(tmp_path, capsys):
    """offline_reward=label:r_hat replaced (label_overwrite) after the checkpoint: the resume trained silently on the
    new rewards (the episodes were the same); now refused naming the label, accepted with
    offline_resume_changed_data=True (recorded); an unrelated label written since is fine."""
    from offline.label_store import content_fingerprint, write_episode_labels

    data = write(tmp_path / "data.h5", n=8)
    reward = np.zeros((8, LIMIT + 1, 1), np.float32)
    reward[:, :LIMIT] = 2.0
    write_episode_labels(data, {"r_hat": reward}, {}, content_fingerprint(data))
    run = [*TINY, f"offline_dataset={data}", "offline_reward=label:r_hat"]
    run_main(tmp_path, "omiga", "climbing", *run)
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    write_episode_labels(data, {"flag": np.ones(8, np.int64)}, {}, content_fingerprint(data))  # unrelated
    capsys.readouterr()
    run_main(tmp_path, "omiga", "climbing", *run, "offline_steps=9", f"checkpoint_path={models}")
    assert "holds the same episodes and the same labels/r_hat this run reads" in "".join(capsys.readouterr())
    write_episode_labels(data, {"r_hat": reward * 3}, {}, content_fingerprint(data), overwrite=True)
    run_main(tmp_path, "omiga", "climbing", *run, "offline_steps=12", f"checkpoint_path={models}", expect=2)
    err = capsys.readouterr().err
    checkpoint = os.path.join(models, "9")
    assert f"{data}: labels/r_hat, which this run reads, changed since the checkpoint {checkpoint}" in err
    assert "the resumed run would train on other labels" in err and "offline_resume_changed_data=True" in err
    assert "12" not in os.listdir(models)
    run_main(tmp_path, "omiga", "climbing", *run, "offline_steps=12", f"checkpoint_path={models}",
             "offline_resume_changed_data=True")
    assert "12" in os.listdir(models)
    infos = glob.glob(os.path.join(tmp_path, "sacred", "omiga", "climbing", "*", "info.json"))
    changed = [json.load(open(p)).get("resumed_from", {}).get("changed_datasets") for p in infos]
    assert [{"path": data, "sha256_then": c[0]["sha256_then"], "sha256_now": c[0]["sha256_now"],
             "changed": ["labels/r_hat"]} for c in changed if c] == [c[0] for c in changed if c]
    assert sum(bool(c) for c in changed) == 1


def test_a_separate_expert_files_episodes_are_resume_checked_and_its_labels_are_not_read(tmp_path, capsys):
    """offline_expert=<path>: D_E is every episode of that file (its labels are never read: label: and top: name a
    label of offline_dataset), so a label written into it since the checkpoint resumes, and other episodes in it
    are refused as a changed offline_dataset is."""
    from offline.label_store import content_fingerprint, write_episode_labels

    data, expert = write(tmp_path / "data.h5"), write(tmp_path / "expert.h5", n=4)
    run = [*TINY, "bc_beta=0.5", f"offline_dataset={data}", f"offline_expert={expert}"]
    run_main(tmp_path, "bc_beta", "climbing", *run)
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    write_episode_labels(expert, {"flag": np.zeros(4, np.int64)}, {}, content_fingerprint(expert))
    capsys.readouterr()
    run_main(tmp_path, "bc_beta", "climbing", *run, "offline_steps=9", f"checkpoint_path={models}")
    assert f"{expert} changed on disk since the checkpoint, but holds the same episodes (labels" in \
        "".join(capsys.readouterr())
    os.remove(expert)
    write(expert, constant_climbing_episodes(4, 1, 1, limit=LIMIT))
    run_main(tmp_path, "bc_beta", "climbing", *run, "offline_steps=12", f"checkpoint_path={models}", expect=2)
    assert f"{expert} changed on disk since the checkpoint {os.path.join(models, '9')} was saved" in \
        capsys.readouterr().err


def test_the_labels_and_sets_a_run_reads():
    from types import SimpleNamespace

    from run.offline import read_names

    args = SimpleNamespace(preference_set="oracle", offline_reward="label:oracle_reward_hat",
                           offline_expert="top:oracle_return_hat:4")
    assert read_names(args) == ["labels/oracle_return_hat", "labels/oracle_reward_hat", "preferences/oracle"]
    args = SimpleNamespace(preference_set="", offline_reward="", offline_expert="label:oracle_expert")
    assert read_names(args) == ["labels/oracle_expert"]
    assert read_names(SimpleNamespace(preference_set="", offline_reward="", offline_expert="quality:expert")) == []


def test_a_lazy_run_resumes_after_labels_were_written_and_says_the_truth_of_old_checkpoints(tmp_path, capsys):
    """offline_lazy=True compared the file's bytes only: any label written since (this pipeline's own) refused the
    resume, saying the file changed as if its episodes had; now its episodes are fingerprinted too. A checkpoint
    without that record says the episodes were not compared."""
    from offline.label_store import content_fingerprint, write_episode_labels

    data = write(tmp_path / "data.h5", n=8)
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={data}", "offline_lazy=True")
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    write_episode_labels(data, {"flag": np.ones(8, np.int64)}, {}, content_fingerprint(data))
    capsys.readouterr()
    run_main(tmp_path, "bc", "climbing", *TINY, "offline_steps=9", f"offline_dataset={data}", "offline_lazy=True",
             f"checkpoint_path={models}")
    assert "holds the same episodes" in "".join(capsys.readouterr())
    assert "9" in os.listdir(models)

    from types import SimpleNamespace

    import pytest

    from run.offline import check_datasets
    from utils.config import ConfigError

    old = {"path": data, "sha256": "a" * 64, "episodes": 8, "content": None}
    ctx = SimpleNamespace(dataset_fingerprints=[dict(old, sha256="b" * 64)], run_info={},
                          args=SimpleNamespace(offline_resume_changed_data=False))
    with pytest.raises(ConfigError, match="the file's bytes differ .*records no fingerprint of its episodes, so they "
                                          r"are not compared \(if only labels were added, the data is the same\)"):
        check_datasets(ctx, [old], "ckpt", None)
