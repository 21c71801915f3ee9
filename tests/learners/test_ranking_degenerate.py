"""Rankings that are only tie-breaking (constant recovered scores, all-tie preference sets) are refused, not reported
as a perfect top K; the errors at the end of a labeling run name the real keys, the checkpoint and the resume."""
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from preference_fixtures import add_preference_set, oracle_pairs, write_skill_dataset

from helpers import make_ctx
from learners.episode_ranking import ranking_report
from offline import OfflineDataset
from offline.format import DatasetError
from offline.label_store import content_fingerprint, write_episode_labels
from offline.preferences import load_preferences
from run.offline import write_labels
from utils.ranking import boundary_ties, constant_scores, top_k


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    """40 expert episodes stored first, then 160 poor ones; set 'oracle' (oracle pairs) and 'ties' (all 0.5)."""
    path = write_skill_dataset(tmp_path_factory.mktemp("data") / "mix.h5", 40, 160)
    pairs, label = oracle_pairs(OfflineDataset.load(path).returns, 100)
    add_preference_set(path, "oracle", pairs, label)
    add_preference_set(path, "ties", pairs, np.full(len(label), 0.5, np.float32))
    return path


def test_ties_do_not_go_to_the_lower_index():
    """A constant score used to select episodes 0..k-1: the experts of a dataset that stores them first."""
    chosen = top_k(np.zeros(200), 40)
    assert len(set(chosen.tolist())) == 40 and chosen.max() >= 40  # not the first 40
    np.testing.assert_array_equal(chosen, top_k(np.zeros(200), 40))  # fixed: reruns and both callers agree
    assert top_k([1.0, 5.0, 3.0], 2).tolist() == [1, 2]  # scores still decide


def test_constant_scores_and_boundary_ties():
    assert constant_scores(np.zeros(10)) and constant_scores(np.full(10, 1e6) + np.arange(10) * 1e-3)
    assert not constant_scores(np.arange(10.0)) and not constant_scores([3.0])
    assert boundary_ties([3.0, 2.0, 2.0, 2.0, 1.0], 2) == (3, 1)
    assert boundary_ties([3.0, 2.0, 1.0], 2) == (1, 1)


def test_constant_scores_have_no_precision_and_spearman_is_undefined(mixture):
    ds = OfflineDataset.load(mixture)
    report = ranking_report({"sum": np.zeros(len(ds))}, ds, 40)
    entry = report["sum"]
    assert entry["precision"] is None and entry["recall"] is None and "constant" in entry["undefined"]
    assert entry["spearman_true_return"] is None and "recovered scores are constant" in entry["spearman_note"]


def marl_sl(**kw):
    th.manual_seed(0)
    return make_ctx("marl_sl", "climbing", seed=0, env_args={"episode_limit": 5}, preference_set="oracle",
                    marl_sl_hidden_dim=8, topk_expert=40, learner_log_interval=10**9, **kw)


def test_marl_sl_refuses_constant_rewards_and_says_precision_is_undefined(mixture):
    """A reward model that outputs one value (marl_sl_hidden_dim=0 did) reported 'top-5 precision 1.000'."""
    ctx = marl_sl()
    with th.no_grad():
        for p in ctx.learner.reward_model.parameters():
            p.zero_()
    result = ctx.learner.label_dataset(OfflineDataset.load(mixture), 10)
    assert result["refused"] and "constant" in result["refused"]
    assert "precision undefined" in result["summary"] and "1.000" not in result["summary"]
    assert "topk_precision" not in result["stats"] and "return_hat_spearman" not in result["stats"]
    assert not marl_sl().learner.label_dataset(OfflineDataset.load(mixture), 10)["refused"]  # untrained: fine


def test_omapl_refuses_constant_recovered_returns(mixture):
    th.manual_seed(0)
    ctx = make_ctx("omapl", "climbing", seed=0, env_args={"episode_limit": 5}, preference_set="oracle",
                   hidden_dim=8, critic_hidden_dim=8, mixing_embed_dim=4, topk_expert=40)
    ds = OfflineDataset.load(mixture)
    ctx.learner.recovered_returns = lambda data: (np.zeros(len(data)), np.full(len(data), 5.0))
    result = ctx.learner.label_dataset(ds, 10)
    assert result["refused"] and "precision undefined" in result["summary"]
    assert "Spearman with the true return undefined" in result["summary"]


def test_an_all_tie_preference_set_is_refused_with_its_counts(mixture):
    with pytest.raises(DatasetError, match=r"preference set 'ties': all 100 labeled pairs are ties \(label 0.5; 0 "
                                           r"first preferred, 0 second preferred\).*use another set"):
        load_preferences(OfflineDataset.load(mixture), "ties", 0.5)


def labeling_ctx(path, tmp_path, learner="omapl", checkpoint="models/run/20"):
    ckpt = str(tmp_path / checkpoint)
    args = SimpleNamespace(learner=learner, name=learner, seed=1, preference_set="oracle", label_overwrite=False,
                           model_dir=str(tmp_path / "models" / "run"))
    key = {"omapl": "omapl_label_name", "marl_sl": "marl_sl_label_name"}[learner]
    return SimpleNamespace(args=args, sacred_run=None, run_info={}, last_checkpoint=ckpt,
                           learner=SimpleNamespace(label_name_key=key))


def result_of(ds, refused=None):
    g = np.arange(len(ds), dtype=np.float32)
    return {"labels": {"oracle_return_hat": g}, "info": {}, "summary": "", "refused": refused}


def test_write_labels_refuses_a_refused_ranking_and_writes_nothing(mixture, tmp_path):
    path = str(tmp_path / "d.h5")
    shutil.copy(mixture, path)
    ds = OfflineDataset.load(path)
    with pytest.raises(DatasetError, match=r"no labels written \(oracle_return_hat\): the recovered returns are "
                                           r"constant.*Checkpoints are kept in"):
        write_labels(labeling_ctx(path, tmp_path), ds, result_of(ds, "the recovered returns are constant"),
                     content_fingerprint(ds), 20, logging.getLogger("t"))
    assert "oracle_return_hat" not in OfflineDataset.load(path).label_names


def test_a_label_written_meanwhile_names_the_real_keys_and_the_resume(mixture, tmp_path):
    """Two seeds on one set: the second to finish said 'overwrite=True replaces it' (not a config key)."""
    path = str(tmp_path / "d.h5")
    shutil.copy(mixture, path)
    ds = OfflineDataset.load(path)  # loaded before the other run wrote its label
    write_episode_labels(path, {"oracle_return_hat": np.zeros(len(ds))}, {"learner": "other"}, content_fingerprint(ds))
    with pytest.raises(DatasetError) as e:
        write_labels(labeling_ctx(path, tmp_path), ds, result_of(ds), content_fingerprint(ds), 20,
                     logging.getLogger("t"))
    msg = str(e.value)
    assert "overwrite=True replaces" not in msg and "label_overwrite=True" in msg and "omapl_label_name=" in msg
    assert f"checkpoint_path={tmp_path / 'models' / 'run'} offline_steps=20" in msg
    assert f"kept: {tmp_path / 'models' / 'run' / '20'}" in msg


def test_a_dataset_replaced_during_the_run_says_restore_and_resume(mixture, tmp_path):
    path = str(tmp_path / "d.h5")
    shutil.copy(mixture, path)
    ds = OfflineDataset.load(path)
    with pytest.raises(DatasetError) as e:
        write_labels(labeling_ctx(path, tmp_path, "marl_sl"), ds, result_of(ds), "0" * 64, 20, logging.getLogger("t"))
    msg = str(e.value)
    assert "changed while this run trained" in msg and "Restore the dataset file" in msg
    assert "checkpoint_path=" in msg and "offline_steps=20" in msg
