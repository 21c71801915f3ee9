"""O-MAPL (MisoDICE phase 1): the preference logits are the ranking's recovered returns, padding never enters them,
top-K on a synthetic mixture with known returns, refusals of bad inputs, the pair sampler, and label: selectors."""
import logging

import numpy as np
import pytest
import torch as th
from preference_fixtures import add_preference_set, oracle_pairs, write_skill_dataset
from test_omar_omiga import with_padding

from helpers import make_ctx
from labeling.trajectory_preference import episode_scores
from learners.episode_ranking import RecoveredReturnError, precision_recall, ranking_report, spearman, top_k
from offline import OfflineDataset
from offline.format import DatasetError
from offline.label_store import content_fingerprint, write_episode_labels
from offline.preferences import PreferencePairs, check_stored_view, load_preferences
from offline.sampling import Sampler, select_expert, top_episodes
from run.offline import oracle_score

N_EXPERT, N_POOR, N_PAIRS = 40, 160, 300  # chance precision of the top 40 = 40 / 200 = 0.2
TINY = dict(hidden_dim=16, critic_hidden_dim=32, mixing_embed_dim=8, learner_log_interval=10**9)


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    """(path, dataset) of 40 expert + 160 poor climbing episodes with 300 oracle pairs stored as set 'oracle'."""
    path = write_skill_dataset(tmp_path_factory.mktemp("data") / "mix.h5", N_EXPERT, N_POOR)
    pairs, label = oracle_pairs(OfflineDataset.load(path).returns, N_PAIRS)
    add_preference_set(path, "oracle", pairs, label)
    return path, OfflineDataset.load(path)


def omapl_ctx(seed=0, **overrides):
    th.manual_seed(seed)
    return make_ctx("omapl", "climbing", seed=seed, env_args={"episode_limit": 5},
                    **{**TINY, "preference_set": "oracle", "topk_expert": N_EXPERT, **overrides})


def train(learner, prefs, steps, pairs_per_step=16, seed=0):
    sampler = Sampler(seed)
    for step in range(steps):
        learner.train({"preferences": sampler.pairs(prefs, pairs_per_step, "cpu")}, step, 0)


# ----- the ranking is what the preference loss trains -----
def test_preference_logits_are_the_difference_of_the_ranking_returns(mixture):
    _, ds = mixture
    ctx = omapl_ctx()
    prefs = load_preferences(ds, "oracle", 0.5)
    train(ctx.learner, prefs, 3)  # away from the initial weights
    pairs = prefs.batch(np.arange(10))
    logits = ctx.learner.preference_logits(pairs)[0].detach()
    g, _ = ctx.learner.recovered_returns(ds)
    want = g[prefs.pairs[:10, 0]] - g[prefs.pairs[:10, 1]]
    np.testing.assert_allclose(logits.double().numpy(), want, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_the_recovered_return(mixture):
    _, ds = mixture
    ctx = omapl_ctx()
    batch = ds.episode_batch(np.arange(6))
    batch = batch[:, : batch.max_t_filled()]
    r_hat, mask = ctx.learner.implied_reward(batch)[:2]
    r_pad, mask_pad = ctx.learner.implied_reward(with_padding(batch, 4))[:2]
    assert r_pad.shape[1] == r_hat.shape[1] + 4 and (mask_pad[:, -4:] == 0).all()
    th.testing.assert_close((r_pad * mask_pad).sum((1, 2)), (r_hat * mask).sum((1, 2)))


def test_pair_batches_hold_both_episodes_padded_alike(mixture):
    _, ds = mixture
    prefs = load_preferences(ds, "oracle", 0.5)
    batch = prefs.sample(8, np.random.default_rng(0))
    assert batch.n_pairs == 8 and batch.first.batch_size == batch.second.batch_size == 8
    assert batch.first.max_seq_length == batch.second.max_seq_length
    rows = np.sort(np.random.default_rng(0).choice(len(prefs), 8, replace=False))
    want = ds.episode_batch(prefs.pairs[rows, 1])
    th.testing.assert_close(batch.second["obs"], want["obs"][:, : batch.second.max_seq_length])
    th.testing.assert_close(batch.label, th.from_numpy(prefs.label[rows]))


# ----- learning: top-K on a synthetic mixture -----
def test_top_k_finds_the_experts_of_a_synthetic_mixture(mixture):
    """300 oracle pairs over 40 expert + 160 poor episodes: the top 40 by recovered return are >= 80% expert (chance
    20%) and the recovered return ranks episodes like the true one (Spearman >= 0.7)."""
    _, ds = mixture
    ctx = omapl_ctx(lr=3e-3, critic_lr=3e-3)
    prefs = load_preferences(ds, "oracle", 0.5)
    train(ctx.learner, prefs, 150)
    result = ctx.learner.label_dataset(ds, 150)
    report = result["info"]
    assert report["sum"]["precision"] >= 0.8, report
    assert report["sum"]["spearman_true_return"] >= 0.7, report
    # the true returns tie across the expert/poor boundary: the tie order (not the lower index, where the fixture
    # stores its experts) picks among them, so even the ceiling is not quite 1
    assert report["ceiling"]["precision"] >= 0.95 and report["true_experts"] == N_EXPERT
    flags = result["labels"]["oracle_expert"]
    assert flags.dtype == np.uint8 and flags.sum() == N_EXPERT
    np.testing.assert_array_equal(np.flatnonzero(flags), np.sort(top_k(result["labels"]["oracle_return_hat"],
                                                                         N_EXPERT)))


def test_the_ceiling_ranks_by_the_score_the_sets_labels_were_judged_by(mixture):
    """run: offline gives a labeling learner the preference set's oracle score (its labeling settings' oracle_key and
    gamma) as the top-K ceiling; a set without settings was judged by the return."""
    _, ds = mixture
    prefs = load_preferences(ds, "oracle", 0.5)
    assert prefs.ceiling is None and oracle_score(prefs, 0.99)[0] == "return"
    np.testing.assert_array_equal(oracle_score(prefs, 0.99)[1], ds.returns)
    prefs.attrs["settings"] = {"oracle_key": "quality"}
    key, s = oracle_score(prefs, 0.99)
    assert key == "quality"
    np.testing.assert_array_equal(s, episode_scores(ds, "quality", 0.99))
    prefs.attrs["settings"] = {"oracle_key": "discounted_return", "gamma": 0.5}  # the labeling run's gamma, not ours
    np.testing.assert_array_equal(oracle_score(prefs, 0.99)[1], episode_scores(ds, "discounted_return", 0.5))
    report = ranking_report({"sum": ds.returns}, ds, N_EXPERT, ("quality", -episode_scores(ds, "quality", 0.99)))
    assert report["ceiling"] == {"precision": 0.0, "recall": 0.0, "oracle_key": "quality"}
    assert report["sum"]["precision"] >= 0.95 and report["sum"]["precision_of_ceiling"] is None  # ties: see above
    assert ranking_report({"sum": ds.returns}, ds, N_EXPERT)["ceiling"]["oracle_key"] == "return"


def test_ranking_helpers():
    assert sorted(top_k([1.0, 3.0, 3.0, 2.0], 2).tolist()) == [1, 2]
    assert precision_recall([0, 1], np.array([True, False, True])) == (0.5, 0.5)
    assert precision_recall([0], None) == (None, None)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 2, 3], [3, 2, 2, 1]) == pytest.approx(-1.0)


# ----- bad inputs -----
def test_missing_preference_set_lists_the_sets_present_and_the_command(mixture):
    with pytest.raises(DatasetError, match=r"no preference set 'llm'.*it has: oracle.*--config=label_preferences"):
        load_preferences(mixture[1], "llm", 0.5)


@pytest.mark.parametrize("n_nan, fraction, match", [
    (10, 0.5, r"all 10 pairs are unlabeled.*label_preferences"),
    (6, 0.5, r"6 of 10 pairs \(60.0%\) are unlabeled, above max_unlabeled_fraction=0.5"),
])
def test_unlabeled_sets_are_refused_with_counts(mixture, n_nan, fraction, match):
    label = np.ones(10, dtype=np.float32)
    label[:n_nan] = np.nan
    pairs = np.stack([np.arange(10), np.arange(10, 20)], 1)
    with pytest.raises(DatasetError, match=match):
        PreferencePairs("s", pairs, label, mixture[1], fraction)


def test_unlabeled_pairs_are_skipped_and_counted(mixture):
    label = np.array([1, np.nan, 0, 0.5, np.nan], dtype=np.float32)
    prefs = PreferencePairs("s", np.stack([np.arange(5), np.arange(5, 10)], 1), label, mixture[1], 0.5)
    assert len(prefs) == 3 and prefs.pairs[:, 0].tolist() == [0, 2, 3] and prefs.label.tolist() == [1, 0, 0.5]
    assert prefs.counts == {"pairs": 5, "labeled": 3, "unlabeled": 2, "ties": 1, "first_preferred": 1,
                            "second_preferred": 1}


def test_a_set_from_a_stopped_labeling_run_warns_naming_the_rerun(mixture):
    pairs, label = np.stack([np.arange(5), np.arange(5, 10)], 1), np.array([1, np.nan, 0, 0.5, np.nan])
    assert PreferencePairs("s", pairs, label, mixture[1], 0.5, {"complete": True}).incomplete() == ""
    assert PreferencePairs("s", pairs, label, mixture[1], 0.5).incomplete() == ""  # sets written before the flag
    stopped = PreferencePairs("s", pairs, label, mixture[1], 0.5, {"complete": False, "settings": {"labeler": "llm"}})
    assert stopped.incomplete().startswith("preference set 's' comes from a labeling run that stopped")
    assert "its 3 labeled pairs (2 unlabeled)" in stopped.incomplete()
    assert "--config=label_preferences" in stopped.incomplete() and "label_name=s labeler=llm" in stopped.incomplete()


def test_a_set_of_mostly_ties_warns_with_the_pairs_that_order(mixture):
    pairs = np.stack([np.arange(20), np.arange(20, 40)], 1)
    label = np.full(20, 0.5)
    label[:2] = [1, 0]  # 18 of 20 ties: the warning's threshold (0.9)
    warning = PreferencePairs("s", pairs, label, mixture[1], 0.5).mostly_ties()
    assert warning.startswith("preference set 's': 18 of its 20 labeled pairs are ties (90%); only 2 order")
    assert "n_pairs" in warning
    label[2] = 1  # 17 of 20
    assert PreferencePairs("s", pairs, label, mixture[1], 0.5).mostly_ties() == ""


def test_views_that_renumber_episodes_are_refused():
    check_stored_view("preference_set=x", 1, 1.0, 0.0, "")
    for args, match in (((2, 1.0, 0.0, ""), "2 datasets are merged"), ((1, 0.5, 0.0, ""), "offline_top_fraction"),
                        ((1, 1.0, 0.1, ""), "offline_valid_fraction"), ((1, 1.0, 0.0, "label:r"), "offline_reward")):
        with pytest.raises(ValueError, match=match):
            check_stored_view("preference_set=x", *args)


@pytest.mark.parametrize("config", ["omapl", "marl_sl"])
def test_topk_outside_the_dataset_is_refused_with_both_numbers(mixture, config):
    """O-MAPL and MARL-SL share the check (MARL-SL reported 'top-0 precision 0.000' and top-200 of 50 episodes)."""
    k = N_EXPERT + N_POOR + 1
    ctx = omapl_ctx(topk_expert=k) if config == "omapl" else make_ctx(
        "marl_sl", "climbing", env_args={"episode_limit": 5}, preference_set="oracle", topk_expert=k,
        marl_sl_hidden_dim=8)
    with pytest.raises(ValueError, match=rf"topk_expert={k} must be in \[1, 200\] \(the dataset has 200 episodes\)"):
        ctx.learner.check_data({"preferences": load_preferences(mixture[1], "oracle", 0.5)})


@pytest.mark.parametrize("config", ["omapl", "marl_sl"])
@pytest.mark.parametrize("k", [0, -3])
def test_topk_below_one_is_a_config_error(config, k):
    from utils.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=rf"'topk_expert' must be an integer >= 1.*; got {k}"):
        build_config(config, "climbing", {"topk_expert": k})


def test_topk_of_every_episode_warns(mixture):
    ctx = omapl_ctx(topk_expert=N_EXPERT + N_POOR)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("pymarl").addHandler(handler)  # main runs may turn off propagation to the root (caplog)
    try:
        ctx.learner.check_data({"preferences": load_preferences(mixture[1], "oracle", 0.5)})
    finally:
        logging.getLogger("pymarl").removeHandler(handler)
    assert any("D_E will equal D_U" in r.getMessage() for r in records)


def test_non_finite_recovered_returns_name_the_step(mixture):
    ctx = omapl_ctx()
    with th.no_grad():
        ctx.learner.critics["q"].fc1.weight.fill_(float("nan"))
    with pytest.raises(RecoveredReturnError, match=r"non-finite recovered returns \(episodes = 200.*gradient step 7"):
        ctx.learner.label_dataset(mixture[1], 7)


# ----- label: selectors -----
def test_offline_expert_label_selects_the_flagged_episodes(mixture, tmp_path):
    path = copy_of(mixture, tmp_path)
    flags = np.zeros(N_EXPERT + N_POOR, dtype=np.uint8)
    flags[[3, 50, 199]] = 1
    write_episode_labels(path, {"oracle_expert": flags}, {"learner": "test"}, content_fingerprint(path))
    ds = OfflineDataset.load(path)
    expert = select_expert(ds, "label:oracle_expert", None, None)
    np.testing.assert_array_equal(expert.returns, ds.returns[[3, 50, 199]])
    np.testing.assert_array_equal(expert.arrays()["obs"], ds.arrays([3, 50, 199])["obs"])
    with pytest.raises(DatasetError, match=r"no label 'llm_expert' \(labels present: \['oracle_expert'\]\).*"
                                           r"--config=label_preferences.*--config=omapl"):
        select_expert(ds, "label:llm_expert", None, None)


def copy_of(mixture, tmp_path):
    path = str(tmp_path / "mix.h5")
    with open(mixture[0], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    return path


def test_offline_expert_top_k_of_the_recovered_return_is_omapls_own_choice_for_any_k(mixture, tmp_path):
    """top:<set>_return_hat:K picks what O-MAPL would flag with topk_expert=K, so the K table needs one O-MAPL run."""
    path = copy_of(mixture, tmp_path)
    ds = OfflineDataset.load(path)
    ctx = omapl_ctx()
    train(ctx.learner, load_preferences(ds, "oracle", 0.5), 20)
    labels = ctx.learner.label_dataset(ds, 20)["labels"]
    write_episode_labels(path, labels, {"learner": "test"}, content_fingerprint(path))
    ds = OfflineDataset.load(path)
    flagged = np.flatnonzero(ds.label("oracle_expert"))
    assert len(flagged) == N_EXPERT
    np.testing.assert_array_equal(top_episodes(ds, f"top:oracle_return_hat:{N_EXPERT}"), flagged)  # episode indices
    chosen = select_expert(ds, f"top:oracle_return_hat:{N_EXPERT}", None, None)
    np.testing.assert_array_equal(chosen.arrays()["obs"], ds.arrays(flagged)["obs"])
    g = np.asarray(ds.label("oracle_return_hat"))
    for k in (1, 10, 150):
        rows = np.sort(np.argsort(-g, kind="stable")[:k])
        np.testing.assert_array_equal(top_episodes(ds, f"top:oracle_return_hat:{k}"), rows)
        assert g[rows].min() >= np.delete(g, rows).max()
    # O-MAPL ranking by G / length flags another top K than the summed return_hat: top: refuses that label
    ctx_mean = omapl_ctx(omapl_rank_by="mean", omapl_label_name="bymean")
    out = ctx_mean.learner.label_dataset(ds, 0)
    assert out["attrs"] == {"rank_by": "mean"}
    write_episode_labels(path, out["labels"], {"learner": "test", **out["attrs"]}, content_fingerprint(path))
    with pytest.raises(DatasetError, match="omapl_rank_by=mean.*label:<set>_expert"):
        top_episodes(OfflineDataset.load(path), "top:bymean_return_hat:10")


def test_offline_expert_top_k_ties_follow_the_tie_order_and_bad_specs_are_refused(mixture, tmp_path):
    """Ties are ordered by utils.ranking's fixed permutation, not by index (datasets often store experts first):
    the same episodes on every call, and the same as O-MAPL's own top K."""
    path = copy_of(mixture, tmp_path)
    scores = np.zeros(N_EXPERT + N_POOR)
    scores[[5, 7, 9, 150]] = [2.0, 1.0, 1.0, 1.0]
    bad = scores.copy()
    bad[3] = np.nan
    write_episode_labels(path, {"s_return_hat": scores, "bad_return_hat": bad}, {"learner": "test"},
                         content_fingerprint(path))
    ds = OfflineDataset.load(path)
    chosen = top_episodes(ds, "top:s_return_hat:3")
    assert 5 in chosen and set(chosen) < {5, 7, 9, 150}
    np.testing.assert_array_equal(chosen, np.sort(top_k(scores, 3)))
    np.testing.assert_array_equal(top_episodes(ds, "top:s_return_hat:3"), chosen)
    np.testing.assert_array_equal(select_expert(ds, "top:s_return_hat:3", None, None).returns, ds.returns[chosen])
    for spec, match in (("top:s_return_hat", "expected 'top:<label name>:<K>'"),
                        ("top:s_return_hat:0", "integer K >= 1"), ("top::5", "expected 'top:<label name>:<K>'"),
                        ("top:s_return_hat:\u00b2", "integer K >= 1"),
                        ("top:s_return_hat:201", "K = 201 is more than the dataset's 200 episodes"),
                        ("top:llm_return_hat:5", r"no label 'llm_return_hat'.*--config=omapl"),
                        ("top:bad_return_hat:5", "1 non-finite values")):
        with pytest.raises((ValueError, DatasetError), match=match):
            select_expert(ds, spec, None, None)


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")
def test_cuda_training_matches_cpu(mixture):
    _, ds = mixture
    prefs = load_preferences(ds, "oracle", 0.5)
    runs, returns = [], []
    for use_cuda in (False, True):
        learner = omapl_ctx(use_cuda=use_cuda).learner  # same seed: same initial weights
        assert learner.device.type == ("cuda" if use_cuda else "cpu")
        sampler = Sampler(0)
        runs.append([learner.train({"preferences": sampler.pairs(prefs, 16, "cpu")}, step, 0) for step in range(3)])
        returns.append(learner.recovered_returns(ds)[0])
    for cpu, gpu in zip(*runs):
        assert gpu == pytest.approx(cpu, rel=1e-3, abs=1e-5)
    np.testing.assert_allclose(returns[1], returns[0], rtol=1e-3, atol=1e-4)
