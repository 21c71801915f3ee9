"""Fixture datasets with known returns and oracle preference sets, written by the labeling store (shared by the
O-MAPL and MARL-SL tests)."""
import numpy as np
import torch as th

from helpers import make_ctx
from offline import DatasetWriter
from offline.label_store import content_fingerprint, write_preferences


class SkillMAC:
    """Each agent plays action 0 (the climbing game's optimum when both do) with probability `skill`, else a uniform
    other action: returns grow with skill, and skill 1 is the expert."""

    action_selector = None

    def __init__(self, n_agents, n_actions, rng):
        self.n_agents, self.n_actions, self.rng, self.skill = n_agents, n_actions, rng, 1.0

    def init_hidden(self, batch_size):
        pass

    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        best = self.rng.random(self.n_agents) < self.skill
        other = self.rng.integers(1, self.n_actions, size=self.n_agents)
        return th.as_tensor(np.where(best, 0, other), dtype=th.long).reshape(1, -1)[bs]


def write_skill_dataset(path, n_expert, n_poor, episode_limit=5, seed=0, max_poor_skill=0.7):
    """Climbing episodes: n_expert at skill 1 (quality expert), then n_poor at skills uniform in [0, max_poor_skill]
    (quality poor). Returns the path."""
    ctx = make_ctx("qmix", "climbing", seed=seed, env_args={"episode_limit": episode_limit})
    rng = np.random.default_rng(seed)
    mac = ctx.runner.mac = SkillMAC(ctx.args.n_agents, ctx.args.n_actions, rng)
    with DatasetWriter(path, ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        for i in range(n_expert + n_poor):
            mac.skill = 1.0 if i < n_expert else rng.uniform(0, max_poor_skill)
            w.add(ctx.runner.run(test_mode=True), qualities="expert" if i < n_expert else "poor")
    ctx.runner.close_env()
    return str(path)


def oracle_pairs(returns, n_pairs, seed=0):
    """(pairs [P, 2], label [P]) of distinct episodes, none repeated: higher true return wins, equal = 0.5."""
    rng = np.random.default_rng(seed)
    seen, pairs = set(), []
    while len(pairs) < n_pairs:
        a, b = (int(x) for x in rng.choice(len(returns), size=2, replace=False))
        if (a, b) not in seen and (b, a) not in seen:
            seen.add((a, b))
            pairs.append((a, b))
    pairs = np.array(pairs, dtype=np.int64)
    r1, r2 = returns[pairs[:, 0]], returns[pairs[:, 1]]
    return pairs, np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5)).astype(np.float32)


def add_preference_set(path, name, pairs, label):
    write_preferences(path, name, pairs, label, {"task": "trajectory_preference", "labeler": "test_oracle"},
                      content_fingerprint(path))
