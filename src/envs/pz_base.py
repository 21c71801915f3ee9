"""Shared pymarl adapter pieces for the PettingZoo-style families (MPE via mpe2, Pistonball).

Both families drive the underlying simulator directly (never its image observations), keep a
fixed set of learner-controlled agents with the same discrete actions, all always available,
and turn per-agent rewards into the team reward the same way. What they share lives here:
argument checks, seeding, the time limit, reward scalarisation and the obs/state buffers.

Reward: the underlying env gives each controlled agent a reward; `common_reward=True` returns
their sum or mean (`reward_scalarisation`, as epymarl does for PettingZoo envs), otherwise the
float32 per-agent array. A time-limit end is a truncation: `terminated=False` and
`info["episode_limit"]=True`.
"""
import numpy as np

from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args
from envs.rng import generator_state, make_generator


def reject_unknown(family, kwargs, valid):
    reject_unknown_args(family, kwargs, valid)


class PettingZooTeamEnv(MultiAgentEnv):
    family = "pettingzoo"

    def _setup(self, n_agents, n_actions, episode_limit, seed, common_reward, reward_scalarisation):
        self.set_reward_settings(self.family, common_reward, reward_scalarisation)
        if episode_limit is None or int(episode_limit) < 1 or int(episode_limit) != episode_limit:
            raise EnvValueError(f"{self.family}: max_cycles must be a positive number of steps, got {episode_limit!r}")
        self.n_agents = int(n_agents)
        self.n_actions = int(n_actions)
        self.episode_limit = int(episode_limit)
        self._next_seed = seed
        self._t = 0
        self._all_avail = [1] * self.n_actions

    # --- seeding / episode bookkeeping ---
    def seed(self, seed=None):
        """Seed the next reset (later resets continue the RNGs)."""
        self._next_seed = seed

    def _take_seed(self):
        seed, self._next_seed = self._next_seed, None
        return seed

    def get_rng_state(self):
        """The simulator's `np_random` (mpe2's landmark and agent placement, Pistonball's ball drop and spin) and the
        seed the next reset takes, if any."""
        return {"pending_seed": self._next_seed, "np_random": generator_state(self._raw.np_random)}

    def set_rng_state(self, state):
        self._next_seed = state["pending_seed"]
        self._raw.np_random = make_generator(state["np_random"])

    def _int_actions(self, actions):
        acts = actions if isinstance(actions, list) else np.asarray(actions).reshape(-1).tolist()
        if len(acts) != self.n_agents:
            raise ValueError(f"{self.family}: expected {self.n_agents} actions, got {len(acts)}")
        acts = [int(a) for a in acts]
        if min(acts) < 0 or max(acts) >= self.n_actions:
            raise ValueError(f"{self.family}: actions must be in 0..{self.n_actions - 1}, got {acts}")
        return acts

    def _end_step(self, terminated, info):
        """Count the step; flag a time-limit end (never together with a real terminal)."""
        self._t += 1
        if terminated:
            return True, info
        if self._t >= self.episode_limit:
            info["episode_limit"] = True
        return False, info

    # --- obs / state: subclasses fill self._obs (n_agents, obs_size) and self._state, fresh arrays each step ---
    def get_obs(self):
        return list(self._obs)

    def get_obs_agent(self, agent_id):
        return self._obs[agent_id]

    def get_obs_size(self):
        return self._obs.shape[1]

    def get_state(self):
        return self._state

    def get_state_size(self):
        return self._state.size

    # --- actions: every action is always available ---
    def get_avail_actions(self):
        return [list(self._all_avail) for _ in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return list(self._all_avail)

    def get_total_actions(self):
        return self.n_actions

    def get_stats(self):
        return {}
