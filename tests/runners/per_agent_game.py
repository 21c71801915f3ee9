"""A tiny 2-agent test env with per-agent rewards whose team sum is always 0 (registered as `opposed_game`).

Each step agent 0 gains 1 for action 0 and agent 1 gains 1 for action 1, and each loses what the other gains:
    r_0 = [a_0 = 0] - [a_1 = 1],  r_1 = [a_1 = 1] - [a_0 = 0].
So only the per-agent rewards say what to do (the agents should take opposite actions); a team reward is 0 whatever
they do (2 * `offset` when `offset` is added to every agent's reward). The observation is the one-hot of the last
joint action plus the elapsed fraction of the episode. The final info reports how often each agent took its
preferred action (`preferred_<i>`, fraction of the steps).

`terminal_at` (or, when the seed is given and terminal_at is not, 2 + seed % 3) ends an episode with a true terminal
before `episode_limit`, so envs seeded differently end at different steps.
It subclasses MatrixGame so that it takes the matrix_game env config's arguments (game and penalty are ignored).
"""
import numpy as np

from envs import REGISTRY as env_REGISTRY
from envs.matrix_game import MatrixGame

NAME = "opposed_game"


class OpposedGame(MatrixGame):
    VALID_ARGS = ("game", "episode_limit", "penalty", "terminal_at", "seeded_ends", "offset")

    def __init__(self, episode_limit=5, terminal_at=None, seeded_ends=False, offset=0.0, seed=None, common_reward=True,
                 reward_scalarisation="sum", **kwargs):
        super().__init__(episode_limit=episode_limit, seed=seed, **kwargs)
        self.set_reward_settings(NAME, common_reward, reward_scalarisation)
        self.n_actions = 2
        if terminal_at is None and seeded_ends and seed is not None:
            terminal_at = 2 + seed % 3
        self.terminal_at = terminal_at
        self.offset = float(offset)
        self._state = np.zeros(2 * self.n_actions + 1, dtype=np.float32)
        self._preferred = np.zeros(2)

    def reset(self):
        self._preferred[:] = 0
        return super().reset()

    def step(self, actions):
        a0, a1 = (int(x) for x in actions)
        r0 = float(a0 == 0) - float(a1 == 1)
        self._preferred += (a0 == 0, a1 == 1)
        self._state[:] = 0
        self._state[a0] = self._state[2 + a1] = 1
        self._t += 1
        self._state[-1] = self._t / self.episode_limit
        terminal = self.terminal_at is not None and self._t >= self.terminal_at
        info = {}
        if terminal or self._t >= self.episode_limit:
            info = {f"preferred_{i}": p / self._t for i, p in enumerate(self._preferred)}
            if not terminal:
                info["episode_limit"] = True
        return self.scalarise_reward(np.array([r0, -r0], dtype=np.float32) + self.offset), terminal, info


def register(monkeypatch):
    monkeypatch.setitem(env_REGISTRY, NAME, OpposedGame)
