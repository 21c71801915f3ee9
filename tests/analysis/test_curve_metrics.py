"""analysis.curve_metrics on synthetic curves: steps to a threshold (reached, not reached, counted per seed), the AUC
normalised by the budget, and the threshold option's parsing."""
import numpy as np
import pytest

from analysis.curve_metrics import (
    ThresholdSummary,
    auc,
    parse_thresholds,
    steps_to_threshold,
    threshold_for,
    threshold_summary,
)

T = [0, 1000, 2000, 3000, 4000]


def test_steps_to_threshold_is_the_first_evaluation_at_or_above_it():
    assert steps_to_threshold(T, [0.0, 0.5, 0.9, 0.8, 1.0], 0.9) == 2000  # at, not above: counts
    assert steps_to_threshold(T, [0.0, 0.95, 0.2, 0.2, 0.2], 0.9) == 1000  # the first time, even if it drops later
    assert steps_to_threshold(T, [0.0, 0.5, 0.89, 0.8, 0.85], 0.9) is None
    assert steps_to_threshold([3000, 1000, 0], [1.0, 0.95, 0.0], 0.9) == 1000  # unsorted input is sorted by step


def test_threshold_summary_counts_seeds_that_never_reach_it():
    curves = [(T, [0, 0.9, 1, 1, 1]), (T, [0, 0, 0, 0.9, 1]), (T, [0, 0, 0, 0, 0.5])]
    s = threshold_summary(curves, 0.9)
    assert (s.n, s.reached) == (3, 2) and s.mean == 2000 and s.std == 1000
    assert s.cell() == "2000 ± 1000 (2/3)"
    assert s.as_dict()["steps"] == [1000.0, 3000.0, None]
    none = ThresholdSummary(0.8, np.array([np.nan, np.nan]))
    assert none.cell() == "not reached (0/2)" and none.mean is None and none.std is None
    assert threshold_summary([(T, [0, 1, 1, 1, 1])], 0.9).cell() == "1000 (1/1)"  # one seed: no spread


def test_auc_is_the_curve_mean_over_the_budget():
    assert auc(T, [1.0] * 5, 4000) == pytest.approx(1.0)
    assert auc(T, [0.0] * 5, 4000) == 0.0
    assert auc(T, [0, 1, 1, 1, 1], 4000) == pytest.approx(3.5 / 4)  # a ramp to 1 over the first 1000 steps
    # learning sooner scores higher at the same final value
    assert auc(T, [0, 1, 1, 1, 1], 4000) > auc(T, [0, 0, 0, 1, 1], 4000)
    # points past the budget are cut there (interpolated at 3000 -> 0.5)
    assert auc([0, 2000, 4000], [0.0, 0.0, 1.0], 3000) == pytest.approx(0.5 * 1000 * 0.5 / 3000)
    # before the first evaluation the first value holds, after the last one the last value holds
    assert auc([1000, 2000], [1.0, 1.0], 4000) == pytest.approx(1.0)
    assert auc([1000, 2000], [0.0, 1.0], 4000) == pytest.approx((500 + 2000) / 4000)


def test_a_run_at_one_from_the_start_scores_one_though_pymarl_stops_testing_before_t_max():
    assert auc([962 + 12500 * i for i in range(20)], [1.0] * 20, 250000) == pytest.approx(1.0)


def test_bad_curves_and_budgets_are_refused():
    with pytest.raises(ValueError, match="positive budget"):
        auc(T, [0] * 5, 0)
    with pytest.raises(ValueError, match="as many steps as values"):
        steps_to_threshold([0, 1], [0.5], 0.9)


def test_thresholds_per_env_with_a_default():
    t = parse_thresholds("two_switch=0.9, pistonball=0.8,default=0.5")
    assert t == {"two_switch": 0.9, "pistonball": 0.8, None: 0.5}
    assert threshold_for(t, "pistonball") == 0.8 and threshold_for(t, "victim_rubble") == 0.5
    assert parse_thresholds("0.9") == {None: 0.9} and threshold_for({"a": 1.0}, "b") is None
    with pytest.raises(ValueError, match="ENV=NUMBER"):
        parse_thresholds("pistonball=high")
