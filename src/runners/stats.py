"""Episode statistics shared by the runners (pymarl's stat names: return_mean, test_return_mean, ...).

`return_mean` is the team return (per-agent env rewards scalarised by `reward_scalarisation`); per-agent rewards add
`agent_<i>_return_mean`/`_std` (each agent's return in what its learner trains on: shaped on training episodes with
a shaper, else the env's; runners.base.Runner.end_batch), `total_return_mean`/`_std` (epymarl's name for the team
return with common_reward=False) and a shaper's `shaped_return_mean` (training episodes only: test episodes are never
shaped): the return of the per-agent rewards the learner trains on, scalarised by `reward_scalarisation`, so with
common_reward and sum it is n_agents x the team return plus the shaping, not on `return_mean`'s scale; env infos add
`<key>_mean` (e.g. `success_mean` of the grid worlds)."""
import numbers

import numpy as np


def numeric_info(info):
    """The numeric scalars of an env info dict (those are what pymarl averages into `<key>_mean`)."""
    return {k: float(v) for k, v in info.items()
            if isinstance(v, (numbers.Number, np.number, np.bool_)) and k != "episode_limit"}


class EpisodeStats:
    def __init__(self, logger, args):
        self.logger = logger
        self.args = args
        self.train, self.test = self._empty(), self._empty()
        self.log_train_stats_t = -1000000
        self.env_step_time = 0.0
        self.env_steps = 0

    @staticmethod
    def _empty():
        return {"returns": [], "infos": {}, "n_episodes": 0, "ep_length": 0, "extra": {}}

    def add_episode(self, test_mode, episode_return, length, info, extra=None):
        """`extra`: more per-episode values by stat name (e.g. {"agent_0_return": 1.0}), logged as `<name>_mean`."""
        cur = self.test if test_mode else self.train
        cur["returns"].append(float(episode_return))
        for k, v in (extra or {}).items():
            cur["extra"].setdefault(k, []).append(float(v))
        cur["n_episodes"] += 1
        cur["ep_length"] += length
        for k, v in numeric_info(info).items():
            cur["infos"][k] = cur["infos"].get(k, 0.0) + v

    def state_dict(self):
        """The training episodes' stats gathered since the runner's last log, as plain values: a checkpoint saved
        between two logs (on Ctrl-C) keeps them, so the resumed run's next log averages the same episodes."""
        t = self.train
        return {"returns": [float(r) for r in t["returns"]], "infos": {k: float(v) for k, v in t["infos"].items()},
                "n_episodes": int(t["n_episodes"]), "ep_length": int(t["ep_length"]),
                "extra": {k: [float(x) for x in v] for k, v in t["extra"].items()}}

    def load_state_dict(self, state):
        self.train = {**self._empty(), **state}

    def add_timing(self, seconds, steps):
        self.env_step_time += seconds
        self.env_steps += steps

    def maybe_log(self, test_mode, t_env, action_selector):
        """Log test stats once test_nepisode episodes are in; train stats every runner_log_interval."""
        if test_mode:
            if self.test["n_episodes"] >= self.args.test_nepisode:
                self._log(self.test, "test_", t_env)
                self.test = self._empty()
        elif t_env - self.log_train_stats_t >= self.args.runner_log_interval:
            self._log(self.train, "", t_env)
            if hasattr(action_selector, "epsilon"):
                self.logger.log_stat("epsilon", action_selector.epsilon, t_env)
            if self.env_step_time > 0:  # the envs' own speed: steps per second spent in env.step, nothing else
                self.logger.log_stat("env_only_steps_per_s", self.env_steps / self.env_step_time, t_env)
            self.env_step_time, self.env_steps = 0.0, 0
            self.log_train_stats_t = t_env
            self.train = self._empty()

    def _log(self, cur, prefix, t_env):
        n = max(cur["n_episodes"], 1)
        if cur["returns"]:
            self.logger.log_stat(prefix + "return_mean", np.mean(cur["returns"]), t_env)
            self.logger.log_stat(prefix + "return_std", np.std(cur["returns"]), t_env)
            if not self.args.common_reward:  # epymarl's names for it with per-agent rewards (its plots read them)
                self.logger.log_stat(prefix + "total_return_mean", np.mean(cur["returns"]), t_env)
                self.logger.log_stat(prefix + "total_return_std", np.std(cur["returns"]), t_env)
        for k, values in cur["extra"].items():
            self.logger.log_stat(f"{prefix}{k}_mean", np.mean(values), t_env)
            if k.startswith("agent_"):  # agent_<i>_return: epymarl logs its std too
                self.logger.log_stat(f"{prefix}{k}_std", np.std(values), t_env)
        self.logger.log_stat(prefix + "ep_length_mean", cur["ep_length"] / n, t_env)
        for k, v in cur["infos"].items():
            self.logger.log_stat(f"{prefix}{k}_mean", v / n, t_env)

