"""Pistonball (PettingZoo 1.27 butterfly pistonball_v6, discrete actions) with a low-dimensional state.

n pistons in a row (piston 0 is the leftmost) move up or down to carry a ball to the LEFT wall.
The learner never sees images: the global state and the per-piston observations are built from
the pymunk bodies of `env.unwrapped` (ball position, velocity, spin and the piston heights),
normalised as the state schema says. pistonball_v6 only draws pixels when a render mode is set
or when its `observe()`/`state()` are called; we call neither, so a step costs only the physics
(no monkeypatching needed; about 30x faster than the image-observation parallel API at 5 pistons).

Stepping: the AEC env is stepped once per piston (piston 0 first); as in pistonball_v6, each
piston's move is followed by one 1/20 s physics step, so one pymarl step is n/20 s of simulated
time and pistons further right see the ball after their left neighbours moved.

Reward (`reward` env arg): `dense` is pistonball_v6's own reward, the same for every piston;
`sparse` is LCA's team reward (+1 when the ball reaches the left wall, `time_penalty` per other
step). With `common_reward` the pistons' rewards are summed (or averaged, `reward_scalarisation`).

Episode ends: the ball reaching the left wall is a real terminal (`terminated=True`); after
`max_cycles` steps the episode is truncated (`info["episode_limit"]=True`).

Deviations from LCA: the paper does not give its piston count per step or episode length; we use
its 5 pistons and PettingZoo's default 125 steps. LCA's agents saw images or its own encodings;
ours see the vectors below. info carries `success` (1 on the step the ball reaches the left wall).

LCA hooks (envs/multiagentenv.py): stay_action 1; agent_roles ["piston"] * n (one shared potential); obs_schema
(no identity field: a piston's own x is where it stands, as a grid agent's cell, not who it is); describe_agent_view;
no sample_state (LCA takes Pistonball pairs from rollouts only). The rule of pair_oracle and oracle_actions (our
reading of the paper's "human heuristic"; the paper gives none): the contact point is the point under the ball's
centre, X = n * ball_x piston widths from the left wall. Pistons at or right of it (piston i spans [i, i + 1], so
i >= X) should rise: they tilt the surface under the ball towards the left wall. The others, the piston under
the ball and those left of it, on its path to the wall, should sink. A piston's move is `better` when it goes the
way it should, `worse` when it goes the other way, `equal` when it stays (action 1) or its move is blocked at the
top or bottom limit (its height does not change). The greedy oracle policy moves every piston the way it should
and stays where that way is blocked. Why the piston under the ball sinks: with it rising (i >= floor(X)) the
pistons under and right of the ball all end at the top and the ball rests on that flat plateau; the greedy
policy then reached the wall in 69 of 100 seeded episodes (seeds 1000-1099), with pistons whose centre is right of
X rising in 87, with the rule above in 95 (uniform random actions: 38).
"""
import math

import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvValueError
from envs.pz_base import PettingZooTeamEnv, reject_unknown

REWARDS = ("dense", "sparse")
VEL_SCALE = 100.0  # px/s per state unit
SPIN_SCALE = 6 * math.pi  # rad/s per state unit: the reset spin is uniform in [-6 pi, 6 pi]
ACTION_MEANINGS = ["move down by 4 px (one of 16 height steps)", "stay", "move up by 4 px (one of 16 height steps)"]


UP, STAY, DOWN = 2, 1, 0


def _motion(vx, vy):
    """The ball's velocity (state units) in words: 'it is moving left at 40 px/s and down at 3 px/s'."""
    parts = [f"{name} at {abs(v) * VEL_SCALE:.0f} px/s" for v, name in
             ((vx, "left" if vx < 0 else "right"), (vy, "up" if vy > 0 else "down")) if abs(v) * VEL_SCALE >= 0.5]
    return f"it is moving {' and '.join(parts)}" if parts else "it is at rest"


class PistonballEnv(PettingZooTeamEnv):
    family = "pistonball"
    stay_action = STAY
    VALID_ARGS = ("n_pistons", "max_cycles", "reward", "time_penalty", "random_drop", "random_rotate", "ball_mass",
                  "ball_friction", "ball_elasticity", "seed", "common_reward", "reward_scalarisation")

    def __init__(self, n_pistons=5, max_cycles=125, reward="dense", time_penalty=-0.1, random_drop=True,
                 random_rotate=True, ball_mass=0.75, ball_friction=0.3, ball_elasticity=1.5, seed=None,
                 common_reward=True, reward_scalarisation="sum", **kwargs):
        reject_unknown("pistonball", kwargs, self.VALID_ARGS)
        if reward not in REWARDS:
            raise EnvValueError(f"pistonball: reward must be one of {REWARDS}, got {reward!r}")
        if int(n_pistons) != n_pistons or n_pistons < 2:
            raise EnvValueError(f"pistonball: n_pistons must be an integer >= 2, got {n_pistons!r}")
        from pettingzoo import make

        self._setup(n_pistons, 3, max_cycles, seed, common_reward, reward_scalarisation)
        self.reward_mode = reward
        self.time_penalty = float(time_penalty)
        # pistonball counts its own cycles; ours end the episode first
        self._raw = make("aec", "butterfly/pistonball-v6", n_pistons=int(n_pistons), continuous=False,
                         max_cycles=self.episode_limit + 1, time_penalty=self.time_penalty, random_drop=random_drop,
                         random_rotate=random_rotate, ball_mass=ball_mass, ball_friction=ball_friction,
                         ball_elasticity=ball_elasticity).unwrapped
        raw = self._raw
        self.n_pistons = self.n_agents
        self.piston_width = raw.piston_width  # 40 px, also the wall width and the ball radius
        self.travel = raw.n_piston_positions * raw.pixels_per_position  # 64 px from lowest to highest
        self.lowest_y = raw.screen_height - raw.wall_width - (raw.piston_height - raw.piston_head_height)
        self.lowest_top = self.lowest_y - raw.piston_radius  # y of a piston's top surface at height 0
        self.arena_width = self.piston_width * self.n_pistons
        self.centres = raw.wall_width + self.piston_width * (np.arange(self.n_pistons) + 0.5)
        self.ball_radius = raw.ball_radius
        self._pad = np.full(1, -1.0)
        raw.reset()  # builds the pymunk space so the sizes are known; reset() reseeds it
        self._read()

    # --- episode ---
    def reset(self):
        self._raw.reset(seed=self._take_seed())
        self._t = 0
        self._read()
        return self.get_obs(), self.get_state()

    def step(self, actions):
        acts = self._int_actions(actions)
        raw = self._raw
        for a in acts:  # AEC order: piston_0 .. piston_{n-1}
            raw.step(a)
        terminated = bool(raw.terminate)
        if self.reward_mode == "dense":
            r = float(raw.rewards[raw.possible_agents[0]])
        else:
            r = 1.0 if terminated else self.time_penalty
        self._read()
        progress = 1.0 - (raw.ball_prev_pos - raw.wall_width) / raw.distance_to_wall_at_game_start
        terminated, info = self._end_step(terminated, {"ball_reached_wall": int(terminated),
                                                       "success": int(terminated),
                                                       "ball_progress": float(progress)})
        return self.scalarise_reward(np.full(self.n_agents, r)), terminated, info

    def _read(self):
        """State and observations from the pymunk bodies (see state_schema / obs layout)."""
        raw = self._raw
        ball = raw.ball
        bx, by = ball.position
        vx, vy = ball.velocity
        heights = (self.lowest_y - np.array([p.position[1] for p in raw.pistonList])) / self.travel
        ball_vec = np.array([(bx - raw.wall_width) / self.arena_width,
                             (self.lowest_top - (by + self.ball_radius)) / self.travel,
                             vx / VEL_SCALE, -vy / VEL_SCALE, ball.angular_velocity / SPIN_SCALE])
        self._state = np.concatenate([ball_vec, heights]).astype(np.float32)
        padded = np.concatenate([self._pad, heights, self._pad])
        n = self.n_agents
        obs = np.empty((n, 9), dtype=np.float64)
        obs[:, 0] = heights
        obs[:, 1] = padded[:-2]
        obs[:, 2] = padded[2:]
        obs[:, 3] = (self.centres - raw.wall_width) / self.arena_width
        obs[:, 4] = (bx - self.centres) / self.piston_width
        obs[:, 5:9] = ball_vec[1:]
        self._obs = obs.astype(np.float32)

    # --- self-description ---
    def task_summary(self):
        n = self.n_pistons
        return (f"Pistonball: {n} pistons stand side by side in a row (piston 0 is the leftmost, each 40 px wide) "
                f"under a ball of radius 40 px, between a left and a right wall. Each piston moves up or down in "
                f"4 px steps between 17 heights (0 = lowest, 16 = highest). The ball starts near the right wall "
                f"with a random spin and falls under gravity; the team must move it to the LEFT wall as fast as "
                f"possible, e.g. by raising pistons to the right of the ball and lowering those to its left so it "
                f"rolls left. Each step the pistons move one after another (piston 0 first), each followed by "
                f"1/20 s of physics. Each piston observes its own and its neighbours' heights and the ball. "
                f"Episodes end when the ball touches the left wall or after {self.episode_limit} steps.")

    def state_schema(self):
        n = self.n_pistons
        fields = [
            Field("ball_x", 0, 1, f"horizontal position of the ball's centre as a fraction of the arena width "
                                  f"(0 = left wall, 1 = right wall; piston i spans [i/{n}, (i+1)/{n}]); the ball "
                                  f"touches the left wall (the goal) at {1 / n:.3g}"),
            Field("ball_height", 1, 2, "height of the ball's bottom above the top of a piston at its lowest "
                                       "position, in units of the full piston travel (64 px): a ball resting on a "
                                       "piston of height h has ball_height = h"),
            Field("ball_vx", 2, 3, "horizontal velocity of the ball in 100 px/s (negative = moving left, "
                                   "towards the goal)"),
            Field("ball_vy", 3, 4, "vertical velocity of the ball in 100 px/s (positive = moving up)"),
            Field("ball_spin", 4, 5, "angular velocity of the ball in units of 6 pi rad/s (positive = "
                                     "clockwise on screen)"),
        ]
        where = {0: " (the leftmost)", n - 1: " (the rightmost)"}
        fields += [Field(f"piston_{i}_height", 5 + i, 6 + i,
                         f"height of piston {i}{where.get(i, '')} as a fraction of its travel: 0 = lowest, "
                         f"1 = highest, in steps of 1/16 (4 px)")
                   for i in range(n)]
        return fields

    def obs_meanings(self):
        """Layout of each piston's observation (9 values)."""
        return ["own height (0..1, as piston_i_height)", "left neighbour's height (-1 at the left wall)",
                "right neighbour's height (-1 at the right wall)",
                "own centre x as a fraction of the arena width (as ball_x)",
                "ball centre x minus own centre x, in piston widths (40 px; positive = ball to the right)",
                "ball_height", "ball_vx", "ball_vy", "ball_spin"]

    def obs_schema(self):
        """obs_meanings as fields (one value each, ego first); none is an identity field (see the module doc)."""
        names = ["own_height", "left_neighbour_height", "right_neighbour_height", "own_x", "ball_dx", "ball_height",
                 "ball_vx", "ball_vy", "ball_spin"]
        return [Field(name, k, k + 1, meaning) for k, (name, meaning) in enumerate(zip(names, self.obs_meanings()))]

    def action_meanings(self):
        return list(ACTION_MEANINGS)

    # --- LCA: roles, agent views, the rule-based ranking and its greedy policy (rule: module docstring) ---
    def agent_roles(self):
        return ["piston"] * self.n_pistons

    def _state_array(self, state):
        s = np.asarray(self.get_state() if state is None else state, dtype=np.float64)
        if s.shape != (self.get_state_size(),):
            raise ValueError(f"pistonball: expected a state vector of {self.get_state_size()} values (get_state "
                             f"layout), got shape {s.shape}")
        return s

    def contact_piston(self, state=None):
        """The piston under the ball's centre (0..n-1) in a state vector (None = now)."""
        s = self._state_array(state)
        return min(max(int(math.floor(s[0] * self.n_pistons)), 0), self.n_pistons - 1)

    def should_rise(self, state=None):
        """bool [n]: the pistons the rule (module docstring) wants up, at or right of the ball's contact point."""
        s = self._state_array(state)
        return np.arange(self.n_pistons) >= s[0] * self.n_pistons

    def pair_oracle(self, state, actions, next_state, agent_id):
        """"better" | "worse" | "equal" for piston agent_id's action in state -> next_state (module docstring)."""
        i, acts = int(agent_id), self._int_actions(actions)
        if not 0 <= i < self.n_pistons:
            raise ValueError(f"pistonball.pair_oracle: agent must be in 0..{self.n_pistons - 1}, got {agent_id}")
        s, after = self._state_array(state), self._state_array(next_state)
        if acts[i] == STAY or abs(after[5 + i] - s[5 + i]) < 0.5 / 16:
            return "equal"
        return "better" if (acts[i] == UP) == bool(self.should_rise(s)[i]) else "worse"

    def oracle_actions(self, state=None):
        """Every piston moves the way the rule says it should, or stays where that way is blocked: int64 [n]."""
        s = self._state_array(state)
        acts = []
        for h, rise in zip(s[5:5 + self.n_pistons], self.should_rise(s)):
            blocked = h > 1 - 0.5 / 16 if rise else h < 0.5 / 16
            acts.append(STAY if blocked else UP if rise else DOWN)
        return np.asarray(acts, dtype=np.int64)

    def task_dependencies(self):
        return ("The pistons are interchangeable and each moves only itself: the ball rolls left only when the "
                "surface under it slopes down to the left, so the pistons right of the ball should rise while the "
                "one under it and those to its left, on its way to the wall, should sink.")

    def describe_agent_view(self, state, agent_id):
        """The state told from piston agent_id's side (ego first, then the other pistons and the ball)."""
        s = self._state_array(state)
        n, i = self.n_pistons, int(agent_id)
        if not 0 <= i < n:
            raise ValueError(f"pistonball.describe_agent_view: agent must be in 0..{n - 1}, got {agent_id}")
        ball_x, ball_h, vx, vy, spin = s[:5]
        steps = [int(round(h * 16)) for h in s[5:5 + n]]
        end = {0: ", the leftmost", n - 1: ", the rightmost"}.get(i, "")
        lines = [f"You are piston {i} of {n} (0 = leftmost{end}); your height is {steps[i]}/16 (0 = lowest, "
                 f"16 = highest)."]
        for j in range(n):
            if j != i:
                side = f"{abs(j - i)} piston{'s' * (abs(j - i) > 1)} to your {'left' if j < i else 'right'}"
                lines.append(f"Teammate piston {j} ({side}): height {steps[j]}/16.")
        c = self.contact_piston(s)
        far = abs(c - i)
        where = "directly above you" if c == i else f"{far} piston{'s' * (far > 1)} to your " \
            + ("left" if c < i else "right")
        offset = ball_x * n - (i + 0.5)
        gap = max((ball_x * n - 1.0) * self.piston_width, 0.0)
        lines.append(f"The ball: its centre is above piston {c}, {where} ({offset:+.2f} piston widths from your "
                     f"centre); its left edge is {gap:.0f} px from the left wall (the goal); its bottom is "
                     f"{ball_h * 16:.1f}/16 above the lowest piston top; {_motion(vx, vy)}, spin "
                     f"{spin * SPIN_SCALE:+.1f} rad/s.")
        return "\n".join(lines)

    def reward_description(self):
        n = self.n_pistons
        team = (f"Team reward = mean over the {n} pistons = r." if self.reward_scalarisation == "mean" else
                f"Team reward = sum over the {n} pistons = {n} x r.")
        if self.reward_mode == "sparse":
            return (f"Sparse (LCA's team reward): every piston gets r = +1 on the step the ball reaches the left "
                    f"wall and r = {self.time_penalty:g} on every other step. {team}")
        penalty = f"{'-' if self.time_penalty < 0 else '+'} {abs(self.time_penalty):g}"
        return (f"Dense (pistonball_v6): every piston gets r = -100 x (x_t - x_(t-1)) / x_0 {penalty}, "
                f"where x is the distance in whole pixels (truncated) from the left wall to the ball's left edge "
                f"(0 once it touches the wall) and x_0 its value at the start, so carrying the ball all the way is "
                f"worth +100 in total and moving it right costs as much; the {self.time_penalty:g} time penalty "
                f"is left out on the step the ball reaches the wall. {team}")

    def describe_state(self, state=None):
        """A drawing: one bar per piston (its height in steps of 16) with the ball's position marked."""
        s = np.asarray(self.get_state() if state is None else state, dtype=np.float64)
        n = self.n_pistons
        ball_x, ball_h, vx, vy, spin = s[:5]
        over = ball_x * n  # in piston widths from the left wall
        piston = min(max(int(over), 0), n - 1)
        left_gap = (over - 1.0) * self.piston_width
        lines = [f"ball: centre above piston {piston} ({over:.2f} piston widths from the left wall, its left "
                 f"edge {max(left_gap, 0.0):.0f} px from the wall), bottom {ball_h * 16:.1f}/16 above the lowest "
                 f"piston top; velocity {vx * VEL_SCALE:+.0f} px/s horizontally ({'left' if vx < 0 else 'right'}), "
                 f"{vy * VEL_SCALE:+.0f} px/s vertically; spin {spin * SPIN_SCALE:+.1f} rad/s"]
        lines.append("pistons (0 = leftmost), height in 4 px steps of 16:")
        for i, h in enumerate(s[5:5 + n]):
            steps = int(round(h * 16))
            mark = " <- ball above" if i == piston else ""
            lines.append(f"piston {i:2d} |{'#' * steps}{' ' * (16 - steps)}| {steps:2d}/16{mark}")
        return "\n".join(lines)

    def close(self):
        # pistonball's close() calls pygame.quit(), which would also tear pygame down for other envs in the
        # process; nothing was opened (no render mode), so there is nothing to release
        pass
