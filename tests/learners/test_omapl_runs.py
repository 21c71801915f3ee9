"""--config=omapl end to end through src/main.py on a dataset whose preference set the labeling store wrote: the
labels it writes, what phase 2 reads from them (offline_expert=label:<set>_expert), exact resume, and refusals."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch as th
from preference_fixtures import add_preference_set, oracle_pairs, write_skill_dataset

from helpers import run_main, sacred_dir
from offline import OfflineDataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["offline_steps=6", "offline_test_interval=3", "offline_log_interval=3", "offline_save_interval=3",
        "preference_batch_size=8", "test_nepisode=2", "env_args.episode_limit=5", "hidden_dim=16",
        "critic_hidden_dim=32", "mixing_embed_dim=8", "topk_expert=10", "preference_set=oracle"]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """10 expert + 30 poor climbing episodes with 60 oracle pairs (set 'oracle')."""
    path = write_skill_dataset(tmp_path_factory.mktemp("data") / "mix.h5", 10, 30)
    pairs, label = oracle_pairs(OfflineDataset.load(path).returns, 60)
    add_preference_set(path, "oracle", pairs, label)
    return path


def copy(path, tmp_path, name="data.h5"):
    out = str(tmp_path / name)
    shutil.copyfile(path, out)
    return out


def test_omapl_end_to_end_writes_the_top_k_labels(tmp_path, labeled, capsys):
    data = copy(labeled, tmp_path)
    proc = subprocess.run([sys.executable, "src/main.py", "--config=omapl", "--env-config=climbing", "with",
                           f"local_results_path={tmp_path}", "seed=3", f"offline_dataset={data}", *TINY],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Wrote labels ['oracle_expert', 'oracle_return_hat']" in proc.stderr
    assert "ceiling (ranking by the oracle's return): precision 1.000" in proc.stderr
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "omapl", "climbing"), "info.json")))
    assert info["preferences"]["labeled"] == 60 and info["preferences"]["batch_pairs"] == 8
    assert info["topk_precision_sum_T"] == [0, 3, 6] and len(info["topk_changed"]) == 3
    labels = info["labels"]
    assert labels["names"] == ["oracle_expert", "oracle_return_hat"] and labels["topk_expert"] == 10
    assert labels["ceiling"] == {"precision": 1.0, "recall": 1.0, "oracle_key": "return"} and labels["step"] == 6
    assert set(labels["sum"]) == set(labels["mean"]) == {"precision", "recall", "spearman_true_return",
                                                         "precision_of_ceiling", "undefined", "spearman_note",
                                                         "boundary_ties"}
    assert labels["sum"]["undefined"] is None  # a trained ranking: its precision is defined
    ds = OfflineDataset.load(data)
    flags, g = ds.label("oracle_expert"), ds.label("oracle_return_hat")
    assert flags.dtype == np.uint8 and flags.sum() == 10 and g.shape == (40,)
    assert flags[np.argsort(-g, kind="stable")[:10]].all()
    with h5py.File(data) as f:
        assert json.loads(f["labels/oracle_expert"].attrs["learner"]) == "omapl_learner"

    # phase 2 reads the top-K as D_E
    run_main(tmp_path / "bc", "bc_beta", "climbing", "offline_steps=2", "offline_test_interval=2", "batch_size=4",
             "test_nepisode=2", "env_args.episode_limit=5", f"offline_dataset={data}",
             "offline_expert=label:oracle_expert")
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "bc", "bc_beta", "climbing"), "info.json")))
    assert info["dataset"]["expert_episodes"] == 10

    # a second run would replace the labels: refused before training unless label_overwrite
    capsys.readouterr()
    run_main(tmp_path / "again", "omapl", "climbing", f"offline_dataset={data}", *TINY, expect=1)
    assert "already has label(s) ['oracle_return_hat', 'oracle_expert'] written by another run; set " \
           "label_overwrite=True" in \
        capsys.readouterr().err
    run_main(tmp_path / "again2", "omapl", "climbing", f"offline_dataset={data}", *TINY, "label_overwrite=True")


def test_omapl_resumes_exactly(tmp_path, labeled):
    # no label_overwrite: the half run wrote its labels at its end; resumed into its own model folder, the run
    # replaces them (labels of another run are refused, above)
    args = [*TINY, "offline_steps=6"]
    full_data, half_data = copy(labeled, tmp_path, "full.h5"), copy(labeled, tmp_path, "half.h5")
    run_main(tmp_path / "full", "omapl", "climbing", *args, f"offline_dataset={full_data}")
    run_main(tmp_path / "half", "omapl", "climbing", *[a for a in args if a != "offline_steps=6"], "offline_steps=3",
             f"offline_dataset={half_data}")
    half = glob.glob(os.path.join(tmp_path, "half", "models", "*"))[0]
    run_main(tmp_path / "resumed", "omapl", "climbing", *args, f"offline_dataset={half_data}",
             f"checkpoint_path={half}")
    full = glob.glob(os.path.join(tmp_path, "full", "models", "*", "6"))[0]
    for name in ("agent.th", "critics.th", "target_critics.th"):
        a, b = th.load(os.path.join(full, name)), th.load(os.path.join(half, "6", name))
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            assert th.equal(flat_a[k], flat_b[k]), (name, k)
    np.testing.assert_array_equal(OfflineDataset.load(full_data).label("oracle_return_hat"),
                                  OfflineDataset.load(half_data).label("oracle_return_hat"))


def _flatten(state, prefix=""):
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("updates, match, code", [
    (["preference_set=llm"], "dataset error: .*no preference set 'llm'", 2),  # a dataset error: one line, exit 2
    (["preference_set="], "trains on trajectory preferences: set preference_set", 1),
    (["offline_top_fraction=0.5"], "offline_top_fraction=0.5 keeps a renumbered subset", 1),
    (["topk_expert=41"], r"config error: topk_expert=41 must be in \[1, 40\]", 2),  # a config mistake: exit 2
])
def test_omapl_refusals(tmp_path, labeled, capsys, updates, match, code):
    run_main(tmp_path, "omapl", "climbing", f"offline_dataset={labeled}", *TINY, *updates, expect=code)
    assert re.search(match, capsys.readouterr().err)


def test_non_finite_recovered_returns_stop_the_run_naming_the_step_and_checkpoint(tmp_path, labeled, capsys,
                                                                                  monkeypatch):
    """Labels are recomputed at steps 0, 3 and 6; NaN at 6 stops the run before anything is written."""
    from learners.omapl_learner import OMAPLLearner
    real, calls = OMAPLLearner.recovered_returns, []

    def nan_on_third_call(self, data):
        calls.append(1)
        g, lengths = real(self, data)
        return (g * np.nan if len(calls) == 3 else g), lengths

    monkeypatch.setattr(OMAPLLearner, "recovered_returns", nan_on_third_call)
    data = copy(labeled, tmp_path)
    run_main(tmp_path, "omapl", "climbing", f"offline_dataset={data}", *TINY, expect=1)
    err = capsys.readouterr().err
    assert re.search(r"non-finite recovered returns \(episodes = 40.*at gradient step 6; no labels were written\. "
                     r"Last good checkpoint: \S+/3", err), err[-2000:]
    assert "oracle_expert" not in OfflineDataset.load(data).label_names


def test_the_label_run_mode_feeds_omapl(tmp_path, labeled):
    """The whole phase 1 through src/main.py: --config=label_preferences stores a set, --config=omapl ranks by it."""
    data = copy(labeled, tmp_path)
    run_main(tmp_path / "label", "label_preferences", "climbing", f"offline_dataset={data}", "label_name=rule",
             "n_pairs=50", "labeler=oracle", "env_args.episode_limit=5")
    run_main(tmp_path / "omapl", "omapl", "climbing", f"offline_dataset={data}",
             *[a for a in TINY if not a.startswith("preference_set")], "preference_set=rule")
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "omapl", "omapl", "climbing"), "info.json")))
    assert info["preferences"]["pairs"] == 50 and info["preferences"]["labeler"] == "oracle"
    assert info["preferences"]["label_accuracy"]["agreement_return"] == 1.0
    assert {"rule_expert", "rule_return_hat"} <= set(OfflineDataset.load(data).label_names)


def test_the_label_exists_recovery_it_recommends_succeeds_under_offline_lazy(tmp_path, labeled, capsys, monkeypatch):
    """Another run writes oracle_expert while this one trains: the error recommends resuming for no further steps with
    label_overwrite=True. Under offline_lazy that resume was refused (the file's bytes changed: only bytes were
    compared); now the episodes are fingerprinted in lazy mode too and the recommended command writes the labels."""
    import run.offline as offline
    from offline.label_store import write_episode_labels

    data = copy(labeled, tmp_path)
    real = offline.write_labels

    def another_run_first(ctx, ds, result, fingerprint, step, log):
        write_episode_labels(data, {"oracle_expert": np.zeros(len(ds), np.uint8)}, {"learner": "other"}, fingerprint)
        return real(ctx, ds, result, fingerprint, step, log)

    monkeypatch.setattr(offline, "write_labels", another_run_first)
    run = [f"offline_dataset={data}", *TINY, "offline_lazy=True"]
    run_main(tmp_path, "omapl", "climbing", *run, expect=2)
    err = capsys.readouterr().err
    command = re.search(r"the same command with (checkpoint_path=\S+ offline_steps=6), adding label_overwrite=True",
                        err)
    assert command, err[-2000:]
    monkeypatch.setattr(offline, "write_labels", real)
    run_main(tmp_path, "omapl", "climbing", *run, *command.group(1).split(), "label_overwrite=True")
    assert "Wrote labels ['oracle_expert', 'oracle_return_hat']" in "".join(capsys.readouterr())
    with h5py.File(data) as f:
        assert json.loads(f["labels/oracle_expert"].attrs["learner"]) == "omapl_learner"


def test_a_refused_ranking_fails_the_run_cleanly_keeping_its_checkpoints(tmp_path, labeled, capsys, monkeypatch):
    """Constant recovered returns: the DatasetError came after the final evaluation without finishing the run (envs,
    logger, model-folder lock) or closing its datasets; now it finishes them and says the checkpoints are kept."""
    from learners.omapl_learner import OMAPLLearner
    from offline.reader import OfflineDataset as Reader
    from run import loop

    data = copy(labeled, tmp_path)
    monkeypatch.setattr(OMAPLLearner, "recovered_returns",
                        lambda self, d: (np.zeros(len(d)), np.full(len(d), 5.0)))
    finished, closed = [], []
    real_finish, real_close = loop.finish, Reader.close
    monkeypatch.setattr(loop, "finish", lambda ctx: (finished.append(ctx), real_finish(ctx))[1])
    monkeypatch.setattr(Reader, "close", lambda self: (closed.append(self), real_close(self))[1])
    run_main(tmp_path, "omapl", "climbing", f"offline_dataset={data}", *TINY, expect=2)
    err = capsys.readouterr().err
    (models,) = glob.glob(os.path.join(tmp_path, "models", "*"))
    assert "no labels written" in err and "The run fails, its labels being its product" in err
    assert f"Checkpoints are kept in {models}" in err and "final evaluation is logged" in err
    assert len(finished) == 1 and closed
    assert {"3", "6"} <= set(os.listdir(models))
