"""Plays one episode at a time in-process (pymarl's episode runner)."""
import time

import torch as th

from envs import env_from_args
from envs.rng import env_rng_state, restore_env_rng_state
from runners.base import Runner


def step_outcome(terminated, info, t, episode_limit, truncation_as_terminal=False):
    """(episode over, stored terminal). A time-limit end is over but not terminal, so it is bootstrapped
    (unless `truncation_as_terminal`, which reproduces epymarl's handling for comparisons)."""
    limit = bool(info.get("episode_limit", False)) or t >= episode_limit
    terminal = bool(terminated) and not info.get("episode_limit", False)
    return terminal or limit, terminal or (limit and truncation_as_terminal)


class EpisodeRunner(Runner):
    def __init__(self, args, logger):
        self.args = args
        self.logger = logger
        if args.batch_size_run != 1:
            raise ValueError(f"the episode runner plays one env (batch_size_run=1, got {args.batch_size_run}); "
                             f"use runner=parallel for several")
        self.batch_size = 1
        self.env = env_from_args(args)
        self.episode_limit = self.env.episode_limit
        self.start_stats(args, logger)

    def get_env_info(self):
        return self.env.get_env_info()

    def save_replay(self):
        self.env.save_replay()

    def close_env(self):
        self.env.close()

    def env_rng_states(self):
        return [env_rng_state(self.env)]

    def _set_env_rng_states(self, states):
        return [restore_env_rng_state(self.env, states[0])]

    def reset(self):
        self.batch = self.new_batch()
        self.env.reset()
        self.t = 0

    def run(self, test_mode=False):
        self.reset()
        env, batch = self.env, self.batch
        episode_return = 0.0
        env_time = 0.0
        done = False
        info = {}
        self.mac.init_hidden(batch_size=self.batch_size)
        with th.inference_mode():
            while not done:
                batch.update({"state": env.get_state(), "avail_actions": env.get_avail_actions(),
                              "obs": env.get_obs()}, ts=self.t)
                actions = self.mac.select_actions(batch, t_ep=self.t, t_env=self.t_env, test_mode=test_mode)
                actions = actions.numpy()
                start = time.perf_counter()
                reward, terminated, info = env.step(actions[0])
                env_time += time.perf_counter() - start
                if test_mode and self.args.render:
                    env.render()
                episode_return += reward
                done, terminal = step_outcome(terminated, info, self.t + 1, self.episode_limit,
                                              self.args.truncation_as_terminal)
                batch.update({"actions": actions, "reward": reward, "terminated": terminal},
                             ts=self.t, mark_filled=False)
                self.t += 1
            # the final state, for bootstrapping, and an action there so t+1 indexing works
            batch.update({"state": env.get_state(), "avail_actions": env.get_avail_actions(),
                          "obs": env.get_obs()}, ts=self.t)
            actions = self.mac.select_actions(batch, t_ep=self.t, t_env=self.t_env, test_mode=test_mode)
            batch.update({"actions": actions.numpy()}, ts=self.t, mark_filled=False)

        if not test_mode:
            self.t_env += self.t
            self.stats.add_timing(env_time, self.t)
        (episode_return,), extra = self.end_batch(batch, [episode_return], test_mode)
        self.stats.add_episode(test_mode, episode_return, self.t, info, {k: v[0] for k, v in extra.items()})
        self.stats.maybe_log(test_mode, self.t_env, self.mac.action_selector)
        return batch
