"""Pairs, the oracle (B.2.1) and the noisy oracle: seeded, per item, accuracy as asked."""
from types import SimpleNamespace as SN

import numpy as np
import pytest
from tests.labeling.datasets import write_dataset

from labeling import LABELERS, TASKS, LabelSource
from labeling.store import content_fingerprint
from labeling.trajectory_preference import episode_scores, sample_pairs
from offline import OfflineDataset


def args(**kw):
    base = dict(n_pairs=50, pair_seed=0, oracle_key="return", gamma=0.9, oracle_accuracy=0.75,
                noise_mode="bernoulli", noise_seed=0, label_name="prefs", label_out="", swap_order=False)
    return SN(**{**base, **kw})


def source_of(path):
    ds = OfflineDataset.load(path)
    return LabelSource(ds, str(path), content_fingerprint(ds))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return source_of(write_dataset(tmp_path_factory.mktemp("d") / "small.h5", E=40))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    # 300 episodes, distinct returns (no ties): 44850 possible pairs
    returns = np.random.default_rng(1).permutation(300).astype(np.float32)
    return source_of(write_dataset(tmp_path_factory.mktemp("d") / "big.h5", E=300, returns=returns))


def test_pairs_distinct_unordered_seeded():
    p = sample_pairs(30, 435, seed=3)  # every pair of 30 episodes
    assert p.shape == (435, 2) and (p[:, 0] != p[:, 1]).all() and p.min() >= 0 and p.max() < 30
    assert len({tuple(sorted(r)) for r in p.tolist()}) == 435
    assert 0.3 < (p[:, 0] < p[:, 1]).mean() < 0.7  # both orders occur
    np.testing.assert_array_equal(sample_pairs(1000, 2000, 7), sample_pairs(1000, 2000, 7))
    assert not np.array_equal(sample_pairs(1000, 2000, 7), sample_pairs(1000, 2000, 8))
    big = sample_pairs(100000, 3000, 0)  # no enumeration of the 5e9 pairs
    assert len({tuple(sorted(r)) for r in big.tolist()}) == 3000 and big.max() < 100000
    with pytest.raises(ValueError, match="more than the 435 distinct pairs of 30 episodes"):
        sample_pairs(30, 436, 0)
    with pytest.raises(ValueError, match="n_pairs must be >= 1"):
        sample_pairs(30, 0, 0)


def test_items_have_stable_ids(small):
    task = TASKS["trajectory_preference"]()
    items = task.make_items(small, args())
    assert len(items) == 50 and len({it.id for it in items}) == 50
    a, b = items[0].data
    assert items[0].id == f"pair:{a:05d}:{b:05d}"
    assert [it.id for it in task.make_items(small, args())] == [it.id for it in items]


def test_oracle_rule_and_keys(small):
    task = TASKS["trajectory_preference"]()
    ds = small.dataset
    items = task.make_items(small, args(n_pairs=300))
    got = LABELERS["oracle"](args()).label(task, items, small).answers
    r = ds.returns
    for it, ans in zip(items, got):
        a, b = it.data
        assert ans == (1.0 if r[a] > r[b] else 0.0 if r[a] < r[b] else 0.5)
    assert (got == 0.5).any()  # integer rewards: some ties
    # discounted: own transitions only (padding rewards are zero here, but lengths differ)
    arr = ds.arrays()
    disc = episode_scores(ds, "discounted_return", 0.9)
    e = 3
    L = int(arr["filled"][e].sum()) - 1
    assert disc[e] == pytest.approx(sum(0.9 ** t * float(arr["reward"][e, t, 0]) for t in range(L)))
    q = episode_scores(ds, "quality", 0.9)
    assert (q[:8] == 6).all() and (q[8:] == 2).all()  # expert, expert = 3 + 3; poor, poor = 1 + 1
    with pytest.raises(ValueError, match="unknown oracle_key 'score'"):
        episode_scores(ds, "score", 0.9)


def test_quality_oracle_refuses_unknown_qualities(tmp_path):
    src = source_of(write_dataset(tmp_path / "u.h5", E=10, qualities="unknown"))
    with pytest.raises(ValueError, match="oracle_key=quality needs an ordinal ground-truth quality"):
        episode_scores(src.dataset, "quality", 0.9)


@pytest.mark.parametrize("acc", [0.6, 0.75, 0.9])
def test_noisy_bernoulli_accuracy_and_seeding(big, acc):
    task = TASKS["trajectory_preference"]()
    a = args(n_pairs=20000, oracle_accuracy=acc)
    items = task.make_items(big, a)
    truth = task.oracle_batch(items, big, a)
    assert (truth != 0.5).all()
    res = LABELERS["noisy_oracle"](a).label(task, items, big)
    agree = (res.answers == truth).mean()
    assert abs(agree - acc) <= 0.01, agree
    assert res.info["oracle_agreement_nontie"] == pytest.approx(agree)
    again = LABELERS["noisy_oracle"](a).label(task, items, big).answers
    np.testing.assert_array_equal(res.answers, again)
    # per item: the same item gets the same answer in another order and among other items
    part = items[::-7]
    np.testing.assert_array_equal(LABELERS["noisy_oracle"](a).label(task, part, big).answers, res.answers[::-7])
    other = LABELERS["noisy_oracle"](args(n_pairs=20000, oracle_accuracy=acc, noise_seed=1)).label(task, items, big)
    assert (other.answers != res.answers).mean() > 0.1


@pytest.mark.parametrize("acc", [0.75, 0.6001, 1.0, 0.0])
def test_noisy_exact_is_exact(big, acc):
    task = TASKS["trajectory_preference"]()
    a = args(n_pairs=20000, oracle_accuracy=acc, noise_mode="exact")
    items = task.make_items(big, a)
    truth = task.oracle_batch(items, big, a)
    res = LABELERS["noisy_oracle"](a).label(task, items, big)
    assert int((res.answers == truth).sum()) == round(acc * 20000)
    np.testing.assert_array_equal(res.answers, LABELERS["noisy_oracle"](a).label(task, items, big).answers)


def test_noisy_ties_and_wrong_answers(small):
    task = TASKS["trajectory_preference"]()
    a = args(n_pairs=500, oracle_accuracy=0.0, noise_mode="exact")
    items = task.make_items(small, a)
    truth = task.oracle_batch(items, small, a)
    res = LABELERS["noisy_oracle"](a).label(task, items, small).answers
    assert (res != truth).all() and set(np.unique(res[truth == 0.5])) <= {0.0, 1.0}
    np.testing.assert_array_equal(res[truth != 0.5], 1 - truth[truth != 0.5])


def test_noisy_oracle_bad_settings():
    with pytest.raises(ValueError, match="oracle_accuracy must be in"):
        LABELERS["noisy_oracle"](args(oracle_accuracy=1.5))
    with pytest.raises(ValueError, match="unknown noise_mode 'gauss'"):
        LABELERS["noisy_oracle"](args(noise_mode="gauss"))


def test_accuracy_report(small):
    task = TASKS["trajectory_preference"]()
    a = args(n_pairs=300)
    items = task.make_items(small, a)
    truth = task.oracle_batch(items, small, a)
    answers = truth.copy()
    answers[:30] = np.nan
    acc = task.accuracy(items, answers, small, a)
    assert acc["agreement_return"] == 1.0 and acc["unlabeled_rate"] == pytest.approx(0.1)
    assert acc["labeled"] == 270 and acc["tie_rate"] == pytest.approx((answers == 0.5).sum() / 270)
    assert acc["expert_vs_poor_pairs"] > 0 and 0 <= acc["expert_vs_poor_accuracy"] <= 1
    q = task.accuracy(items, answers, small, args(n_pairs=300, oracle_key="quality"))
    assert "agreement_quality" in q
