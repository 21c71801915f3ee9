"""Learning checks on the repeated climbing and penalty games (5-step episodes, fixed seeds).

Random play earns about -17 (climbing) and -99 (penalty) per episode. The thresholds need
every seed to reach a good joint action: 25 = at least 5 per step (climbing) and 10 = at
least 2 per step (penalty). An untrained greedy Q-policy is some fixed joint action, which
often clears a threshold already (climbing: 5 of seeds 1-8 score 55 or 35 at their first test), so each
game's seeds are ones whose untrained policy scores below it, and the test checks that at
its first test: passing needs learning on every seed. The policy-gradient methods are tested on their
*sampled* policy, which starts uniform.
"""
import json
import os

import pytest

from helpers import run_main_concurrently, sacred_dir

RANDOM_RETURN = {"climbing": -31 / 9 * 5, "penalty": -178 / 9 * 5}
THRESHOLD = {"climbing": 25.0, "penalty": 10.0}
# untrained greedy QMIX/VDN policies of these seeds score below the threshold (climbing 0 / -35 / 0, penalty -500)
SEEDS = {"climbing": (2, 9, 19), "penalty": (1, 5, 6)}
COMMON = ["env_args.episode_limit=5", "test_nepisode=10", "use_tensorboard=False", "save_model=False",
          "log_interval=100000", "runner_log_interval=1000", "learner_log_interval=100000"]
ALGS = {
    "qmix": ["t_max=6000", "epsilon_anneal_time=3000", "test_interval=6000"],
    "vdn": ["t_max=6000", "epsilon_anneal_time=3000", "test_interval=6000"],
    # sampled (not greedy) test episodes: the learned policy itself must be good
    "ippo": ["t_max=10000", "test_interval=10000", "test_greedy=False", "lr=0.003"],
    "mappo": ["t_max=10000", "test_interval=10000", "test_greedy=False", "lr=0.003"],
}


def first_and_last_test(tmp_path, alg, game):
    """(first, last) test (return, t_env) of the run: the first comes after the first batch of episodes (T <= 50),
    before a Q-learner's first update and after at most one PPO update."""
    info = json.load(open(os.path.join(sacred_dir(tmp_path, alg, game), "info.json")))
    series = list(zip(info["test_return_mean"], info["test_return_mean_T"]))
    return series[0], series[-1]


@pytest.mark.long
@pytest.mark.parametrize("game", ["penalty", "climbing"])
@pytest.mark.parametrize("alg", sorted(ALGS))
def test_learns_well_above_random(tmp_path, alg, game):
    seeds = SEEDS[game]  # run at once: the seeds share both cores
    run_main_concurrently([(tmp_path / str(seed), alg, game, *COMMON, *ALGS[alg], f"seed={seed}") for seed in seeds])
    returns = []
    for seed in seeds:
        (start, t0), (ret, t) = first_and_last_test(tmp_path / str(seed), alg, game)
        assert t0 <= 50 and start < THRESHOLD[game], (
            f"seed {seed}'s untrained policy scores {start}, not below {THRESHOLD[game]}: passing would not need "
            f"learning; choose seeds whose untrained policy scores below it")
        assert t >= 6000
        returns.append(ret)
    assert min(returns) >= THRESHOLD[game], (returns, RANDOM_RETURN[game])
