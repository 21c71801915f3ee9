"""Repeated cooperative matrix games (climbing, penalty).

Every step all agents pick a row/column of the payoff matrix and share its payoff.
The state (and every agent's observation) is the one-hot of the last joint action
(zeros at the first step), so a recurrent or state-conditioned learner can see it.
Episodes end by time limit only (`episode_limit` steps, reported as truncation).
"""
import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args

# Claus & Boutilier (1998). Rows: agent 0's action, columns: agent 1's action.
PAYOFFS = {
    "climbing": [[11, -30, 0], [-30, 7, 6], [0, 0, 5]],
    # penalty k = -100 by default; `penalty` env arg changes it
    "penalty": [[None, 0, 10], [0, 2, 0], [10, 0, None]],
}


def payoff_matrix(game, penalty=-100):
    if game not in PAYOFFS:
        raise EnvValueError(f"unknown matrix game '{game}'; choose one of {sorted(PAYOFFS)}")
    return np.array([[penalty if v is None else v for v in row] for row in PAYOFFS[game]], dtype=np.float32)


def check_values(name, env_args):
    """EnvValueError naming the argument, its value and what it must be, for the first bad value in `env_args`."""
    def bad(arg, must):
        return EnvValueError(f"env_args.{arg} for {name} must be {must}; got {env_args[arg]!r}")

    limit = env_args.get("episode_limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise bad("episode_limit", "an integer >= 1 (steps per episode)")
    if env_args.get("game", "penalty") not in PAYOFFS:
        raise bad("game", f"one of {', '.join(sorted(PAYOFFS))}")
    penalty = env_args.get("penalty", 0)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)):
        raise bad("penalty", "a number (the payoff of the penalty game's miscoordinated corners)")


class MatrixGame(MultiAgentEnv):
    VALID_ARGS = ("game", "episode_limit", "penalty")

    @classmethod
    def check_args(cls, name, env_args):
        super().check_args(name, env_args)
        check_values(name, env_args)

    def __init__(self, game="penalty", episode_limit=25, penalty=-100, seed=None, common_reward=True,
                 reward_scalarisation="sum", **kwargs):
        # the payoff is a team reward already, so the reward settings change nothing here
        reject_unknown_args("matrix_game", kwargs, self.VALID_ARGS)
        check_values("matrix_game", {"game": game, "episode_limit": episode_limit, "penalty": penalty})
        self.game = game
        self.payoff = payoff_matrix(game, penalty)
        self.n_agents = 2
        self.n_actions = self.payoff.shape[0]
        self.episode_limit = int(episode_limit)
        self._state = np.zeros(self.n_actions * self.n_agents, dtype=np.float32)
        self._t = 0

    def get_rng_state(self):
        return None  # deterministic: nothing to save

    def set_rng_state(self, state):
        pass

    def reset(self):
        self._t = 0
        self._state[:] = 0
        return self.get_obs(), self.get_state()

    def step(self, actions):
        a = [int(x) for x in actions]
        reward = float(self.payoff[a[0], a[1]])
        self._state[:] = 0
        for i, ai in enumerate(a):
            self._state[i * self.n_actions + ai] = 1
        self._t += 1
        info = {}
        if self._t >= self.episode_limit:
            info["episode_limit"] = True
        return reward, False, info

    def get_obs(self):
        return [self._state.copy() for _ in range(self.n_agents)]

    def get_obs_size(self):
        return self._state.size

    def get_state(self):
        return self._state.copy()

    def get_state_size(self):
        return self._state.size

    def get_total_actions(self):
        return self.n_actions

    def get_stats(self):
        return {}

    def state_schema(self):
        a = self.n_actions
        return [Field(f"agent_{i}_last_action", i * a, (i + 1) * a,
                      f"one-hot of agent {i}'s action at the previous step (all zeros at the first step)")
                for i in range(self.n_agents)]

    def action_meanings(self):
        # agent 0 picks the payoff row, agent 1 the column
        return [f"action {k} (row {k} for agent 0, column {k} for agent 1)" for k in range(self.n_actions)]

    def task_summary(self):
        return (f"A repeated two-player cooperative matrix game ({self.game}): at every step both agents pick one "
                f"of {self.n_actions} actions at the same time, without communicating, and the team receives the "
                f"payoff of the joint action. Each agent sees only the previous joint action. The goal is to "
                f"coordinate on the joint action with the highest payoff rather than a safe but worse one.")

    def reward_description(self):
        rows = "; ".join(f"agent 0 plays {i}: " + ", ".join(f"{v:g}" for v in row)
                         for i, row in enumerate(self.payoff))
        return (f"Team reward each step = payoff[action of agent 0][action of agent 1] of the {self.game} game "
                f"({rows} for agent 1 playing 0..{self.n_actions - 1}). No other reward; "
                f"episodes last {self.episode_limit} steps.")
