"""Level-Based Foraging (lbforaging 2.0) with the compact global state of the QLLM paper.

Observations are LBF's own per-agent vectors (as in epymarl's gymma); only the global state
differs. `state: qllm` (default) is the layout of QLLM's LBF task prompt (paper 002, App. C):

    per agent  (row, column, level)                         3 * n_agents
    per food   (row, column, level), (-1, -1, 0) once picked 3 * max_num_food
    last action of each agent, -1 at the first step          n_agents

Foods keep the slot they got at reset (row-major order of their spawn cells), so a picked-up
food does not shift the others. The paper calls the coordinates x and y; they are LBF's
(row, column) and the schema says so. Deviations from the QLLM code, on purpose: the last
actions are reset to -1 at the start of *every* episode (theirs only in a process's first
episode), and a food that failed to spawn is padded as (-1, -1, 0) so the state size is fixed.
`state: obs` gives epymarl's state (the concatenated observations) instead.

Episode ends: all food collected is a real terminal; the time limit is a truncation (see gymma).
"""
import numpy as np

from envs import episode as ep_text
from envs.description import Field
from envs.gymma import GymmaWrapper
from envs.multiagentenv import EnvArgumentError, EnvValueError, ObsHooksUnsupported, obs_array

STATE_LAYOUTS = ("qllm", "obs")


def lbf_key(key):
    """Accept 'Foraging-8x8-2p-2f-coop-v3' as well as 'lbforaging:Foraging-8x8-2p-2f-coop-v3'."""
    if not key:
        raise EnvArgumentError("lbf needs env_args.key, e.g. 'Foraging-8x8-2p-2f-coop-v3' "
                         "(ids: Foraging[-2s]-{5..19}x{N}-{2..9}p-{1..4}f[-coop]-v3)")
    module, _, env_id = key.rpartition(":")
    if not env_id.startswith("Foraging"):
        raise EnvArgumentError(f"lbf: '{key}' is not a Level-Based Foraging env; use --env-config=gymma for others")
    return f"{module or 'lbforaging'}:{env_id}"


class ForagingEnv(GymmaWrapper):
    registry_name = "lbf"
    OWN_ARGS = ("key", "time_limit", "state")
    WARNS_REGISTERED_LIMIT = False  # its own env config: env_args.time_limit (LBF's usual 50 by default)
    gym_key = staticmethod(lbf_key)

    def __init__(self, key="Foraging-8x8-2p-2f-coop-v3", time_limit=50, state="qllm", **kwargs):
        if state not in STATE_LAYOUTS:
            raise EnvValueError(f"lbf: env_args.state must be one of {STATE_LAYOUTS}, got {state!r}")
        super().__init__(key=lbf_key(key), time_limit=time_limit, **kwargs)
        self.layout = state
        game = self._unwrapped
        self.n_food = game.max_num_food
        self._last_actions = np.full(self.n_agents, -1, dtype=np.float32)
        self._foods = []  # (row, col) of each food slot as Python ints, fixed at reset
        self._food_padding = (-1, -1, 0) * self.n_food  # the slots of foods that failed to spawn

    def reset(self):
        out = super().reset()
        self._last_actions[:] = -1
        field = self._unwrapped.field
        rows, cols = np.nonzero(field)
        self._foods = list(zip(rows.tolist(), cols.tolist()))[: self.n_food]
        self._food_padding = (-1, -1, 0) * (self.n_food - len(self._foods))
        return out[0], self.get_state()

    def step(self, actions):
        result = super().step(actions)
        self._last_actions[:] = np.asarray(actions).reshape(-1)
        return result

    def get_state(self):
        if self.layout == "obs":
            return super().get_state()
        # one list of Python numbers converted once: writing numpy slices element by element cost ~3x as much
        game = self._unwrapped
        values = []
        for p in game.players:
            values.extend(p.position)
            values.append(p.level)
        field = game.field
        for r, c in self._foods:
            level = field.item(r, c)
            values.extend((r, c, level) if level else (-1, -1, 0))
        values.extend(self._food_padding)
        values.extend(self._last_actions.tolist())
        return np.array(values, dtype=np.float32)

    def get_state_size(self):
        if self.layout == "obs":
            return super().get_state_size()
        return 4 * self.n_agents + 3 * self.n_food

    def state_schema(self):
        if self.layout == "obs":
            return super().state_schema()
        rows, cols = self._unwrapped.field_size
        where = f"row 0..{rows - 1} top to bottom (north = row - 1), column 0..{cols - 1} left to right"
        fields = [Field(f"agent_{i}", 3 * i, 3 * i + 3, f"(row, column, level) of agent {i}; {where}")
                  for i in range(self.n_agents)]
        base = 3 * self.n_agents
        fields += [Field(f"food_{j}", base + 3 * j, base + 3 * j + 3,
                         f"(row, column, level) of food item {j}; (-1, -1, 0) once it has been picked up")
                   for j in range(self.n_food)]
        base += 3 * self.n_food
        fields.append(Field("last_actions", base, base + self.n_agents,
                            "action index each agent took at the previous step (agent 0 first); "
                            "-1 for every agent at the first step of an episode"))
        return fields

    # --- obs hooks (CODI stitching): exact with full sight; generated obs are rounded to LBF's integer grid ---
    def state_from_obs(self, obs, actions=None):
        """`obs [..., T, n, O]`, a trajectory from an episode's first step, and `actions [..., T, n]` (the actions
        taken; the last step's unused) -> `state [..., T, S]`. `state: qllm` needs both: food slots are fixed at the
        first step (row-major, as at reset) and the state ends with the previous step's actions (-1 at step 0).
        The agents' views are averaged, then rounded, so a generated view that wobbles still gives a grid state."""
        if self.layout == "obs":
            obs = self._full_sight_obs(obs, "state_from_obs")
            return np.rint(obs).reshape(*obs.shape[:-2], -1).astype(np.float32)
        obs = self._full_sight_obs(obs, "state_from_obs")
        if obs.ndim < 3:
            raise ValueError("state_from_obs: LBF's state (state: qllm) needs a time axis, obs [..., T, n, O] from "
                             "an episode's first step: food slots are fixed at the first step")
        if actions is None:
            raise ValueError("state_from_obs: LBF's state (state: qllm) holds the previous step's actions; pass "
                             "actions [..., T, n]")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape == (*obs.shape[:-1], 1):
            actions = actions[..., 0]
        if actions.shape != obs.shape[:-1]:
            raise ValueError(f"state_from_obs: actions must be [..., T, n] = {obs.shape[:-1]}, got {actions.shape}")
        agents, agent_level, food, food_level = self._decode_obs(obs)
        n, m = self.n_agents, self.n_food
        # slots: the foods present at the first step in row-major order (padded slots stay empty)
        slot, slot_level = self._row_major(food[..., :1, :, :], food_level[..., :1, :])  # [..., 1, m, 2], [..., 1, m]
        slot_used = slot_level > 0
        same = (food[..., None, :, :] == slot[..., :, None, :]).all(-1) & (food_level[..., None, :] > 0)
        level = np.where(same, food_level[..., None, :], 0).max(-1) * slot_used  # [..., T, m]: 0 = picked up
        food_state = np.where((level > 0)[..., None], np.concatenate([np.broadcast_to(slot, (*level.shape, 2)),
                                                                      level[..., None]], axis=-1), [-1, -1, 0])
        last = np.concatenate([np.full_like(actions[..., :1, :], -1), actions[..., :-1, :]], axis=-2)
        state = np.concatenate([np.concatenate([agents, agent_level[..., None]], -1).reshape(*obs.shape[:-2], 3 * n),
                                food_state.reshape(*obs.shape[:-2], 3 * m), last], axis=-1)
        return state.astype(np.float32)

    def avail_actions_from_obs(self, obs):
        """`obs [..., n, O]` -> `[..., n, 6]`, lbforaging's rule: a move is available when its target cell is on
        the grid and holds no food (other agents do not block it), load when a food is in one of the 4
        neighbouring cells, stay always."""
        agents, _, food, food_level = self._decode_obs(self._full_sight_obs(obs, "avail_actions_from_obs"))
        rows, cols = self._unwrapped.field_size
        present = food_level > 0

        def food_at(cell):  # cell [..., n, 2] -> [..., n] bool
            return ((cell[..., :, None, :] == food[..., None, :, :]).all(-1) & present[..., None, :]).any(-1)

        steps = {"NORTH": (-1, 0), "SOUTH": (1, 0), "WEST": (0, -1), "EAST": (0, 1)}
        move = {}
        for name, d in steps.items():
            cell = agents + np.asarray(d)
            inside = (cell[..., 0] >= 0) & (cell[..., 0] < rows) & (cell[..., 1] >= 0) & (cell[..., 1] < cols)
            move[name] = (inside, food_at(cell))
        avail = {"NONE": np.ones(agents.shape[:-1], dtype=bool),
                 "LOAD": np.any([hit for _, hit in move.values()], axis=0)}
        avail.update({name: inside & ~hit for name, (inside, hit) in move.items()})
        return np.stack([avail[a.name] for a in self._lbf_actions], axis=-1).astype(np.int64)

    def terminal_from_obs(self, obs):
        """`obs [..., n, O]` -> `[...]` bool: every food has been picked up (LBF's only real terminal)."""
        _, _, _, food_level = self._decode_obs(self._full_sight_obs(obs, "terminal_from_obs"))
        return ~(food_level > 0).any(-1)

    def _full_sight_obs(self, obs, hook):
        """Refuse what the hooks cannot rebuild exactly; the obs as float64 `[..., n, O]`."""
        game = self._unwrapped
        rows, cols = game.field_size
        if game._grid_observation:
            raise ObsHooksUnsupported(self, hook, "its observations are grids (grid_observation=True)")
        if not game._observe_agent_levels:
            raise ObsHooksUnsupported(self, hook, "its observations hold no agent levels (observe_agent_levels=False)")
        if game.sight < max(rows, cols) - 1:
            raise ObsHooksUnsupported(self, hook, f"partial sight (sight={game.sight} on a {rows}x{cols} grid): an "
                                                  f"agent sees only the cells within `sight` of it, so the grid "
                                                  f"cannot be rebuilt from observations; use a key without '-2s'")
        return obs_array(self, obs, hook)

    def _decode_obs(self, obs):
        """Integer grid quantities from `obs [..., n, O]` (lbforaging 2.0's vector obs: (row, col, level) per food,
        row-major, then per player, self first): the agents' views averaged, then rounded and clipped to the grid.
        Returns agents [..., n, 2], agent levels [..., n], foods [..., m, 2], food levels [..., m] (0: none)."""
        rows, cols = self._unwrapped.field_size
        food, agents = (views.mean(-3) for views in self._views(obs))  # [..., m, 3], [..., n, 3]
        limit = np.array([rows - 1, cols - 1])
        grid = lambda a: np.clip(np.rint(a), 0, limit).astype(np.int64)  # noqa: E731
        food_level = np.maximum(np.rint(food[..., 2]), 0).astype(np.int64)
        return (grid(agents[..., :2]), np.maximum(np.rint(agents[..., 2]), 0).astype(np.int64),
                grid(food[..., :2]), food_level)

    def _views(self, obs):
        """Each agent's view of the grid from `obs [..., n, O]`: foods `[..., view k, m, 3]` and agents
        `[..., view k, n, 3]` as (row, col, level), agents reordered from self-first to agent order."""
        n, m = self.n_agents, self.n_food
        food = obs[..., : 3 * m].reshape(*obs.shape[:-1], m, 3)
        players = obs[..., 3 * m: 3 * m + 3 * n].reshape(*obs.shape[:-1], n, 3)  # [..., view k, slot, 3]
        k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        slot = np.where(k == i, 0, np.where(i < k, i + 1, i))  # where view k lists agent i: self first, then in order
        return food, players[..., k, slot, :]

    def view_gap_from_obs(self, obs):
        """Full-sight LBF: `[...]`, the largest difference, in cells or levels, between a coordinate or level of a
        food or an agent in one agent's view and in the grid the state keeps (state_from_obs: the views averaged,
        then rounded). 0 on real observations."""
        obs = self._full_sight_obs(obs, "view_gap_from_obs")
        return np.max([np.abs(views - np.rint(views.mean(-3, keepdims=True))).max((-3, -2, -1))
                       for views in self._views(obs)], axis=0)

    def snap_obs(self, obs, first=None):
        """Full-sight LBF: `obs [..., n, O]` -> what lbforaging shows every agent of the one grid the views describe
        (state_from_obs's: the views averaged, then rounded and clipped to the grid): the foods left, listed
        row-major, then (-1, -1, 0) for each one gone; then the players, self first, as (row, column, level).
        With `first [..., n, O]`, the real observation before the steps `obs [..., T, n, O]`, LBF's rules hold
        too: the foods are first's, each at its cell and level while the views still show it there and gone for
        good once they do not, and the agents keep first's levels. The identity on real observations. Not fixed:
        two agents on one cell or an agent on a food (the dynamics check judges those moves)."""
        obs = self._full_sight_obs(obs, "snap_obs")
        shape = obs.shape
        if first is not None:
            first = self._full_sight_obs(first, "snap_obs")
            if obs.ndim < 3 or first.shape != obs.shape[:-3] + obs.shape[-2:]:
                raise ValueError(f"snap_obs: first must be the observation before the steps, [..., n, O] for obs "
                                 f"[..., T, n, O]; got obs {obs.shape} and first {first.shape}")
            obs = np.concatenate([first[..., None, :, :], obs], axis=-3)
        agents, agent_level, food, food_level = self._decode_obs(obs)
        if first is not None:
            slot, slot_level = self._row_major(food[..., :1, :, :], food_level[..., :1, :])
            shown = (food[..., None, :, :] == slot[..., :, None, :]).all(-1) & (food_level[..., None, :] > 0)
            here = np.logical_and.accumulate(shown.any(-1) & (slot_level > 0), axis=-2)[..., 1:, :]  # [..., T, m]
            food = np.broadcast_to(slot, (*here.shape, 2))
            food_level = np.where(here, slot_level, 0)
            agents = agents[..., 1:, :, :]
            agent_level = np.broadcast_to(agent_level[..., :1, :], agents.shape[:-1])
        food, food_level = self._row_major(food, food_level)  # lbforaging lists the foods by np.nonzero of the field
        foods = np.where((food_level > 0)[..., None], np.concatenate([food, food_level[..., None]], -1), [-1, -1, 0])
        players = np.concatenate([agents, agent_level[..., None]], -1)  # [..., n, 3] in agent order
        n = self.n_agents
        self_first = np.array([[k] + [i for i in range(n) if i != k] for k in range(n)])  # view k's player slots
        views = players[..., self_first, :].reshape(*players.shape[:-2], n, 3 * n)
        food_row = foods.reshape(*foods.shape[:-2], 1, -1)
        out = np.concatenate([np.broadcast_to(food_row, (*food_row.shape[:-2], n, food_row.shape[-1])), views], -1)
        return out.astype(np.float32).reshape(shape)

    def _row_major(self, food, level):
        """Foods `[..., m, 2]` and their levels `[..., m]` in lbforaging's order: the present ones (level > 0)
        row-major, then the empty slots."""
        cols = self._unwrapped.field_size[1]
        key = np.where(level > 0, food[..., 0] * cols + food[..., 1], np.iinfo(np.int64).max)
        order = np.argsort(key, axis=-1, kind="stable")
        return np.take_along_axis(food, order[..., None], axis=-2), np.take_along_axis(level, order, axis=-1)

    def edge_states(self):
        """States that random play rarely reaches, for validating credit functions (qllm.states): the
        current state with each food picked up, with all food picked up, and those at an episode's first step."""
        if self.layout == "obs":
            return []
        base = self.get_state()
        start = 3 * self.n_agents
        picked = []
        for foods in [[j] for j in range(self.n_food)] + [list(range(self.n_food))]:
            state = base.copy()
            for j in foods:
                state[start + 3 * j: start + 3 * j + 3] = (-1, -1, 0)
            picked.append(state)
        first_step = [s.copy() for s in picked]
        for s in first_step:
            s[start + 3 * self.n_food:] = -1
        return picked + first_step

    def describe_state(self, state=None):
        """The field values, plus (qllm layout) a drawing of the grid: agents as digits, food as F<level>."""
        state = self.get_state() if state is None else np.asarray(state)
        text = super().describe_state(state)
        if self.layout == "obs":
            return text
        rows, cols = self._unwrapped.field_size
        grid = [["." for _ in range(cols)] for _ in range(rows)]
        n = self.n_agents
        for j in range(self.n_food):
            r, c, level = state[3 * n + 3 * j: 3 * n + 3 * j + 3]
            if level > 0:
                grid[int(r)][int(c)] = f"F{int(level)}"
        for i in range(n):
            r, c, level = state[3 * i: 3 * i + 3]
            grid[int(r)][int(c)] = f"A{i}"
        drawing = "\n".join(" ".join(f"{cell:>2}" for cell in row) for row in grid)
        return (f"{text}\nGrid (row 0 at the top; A<i> = agent i, F<l> = food of level l, . = empty):\n"
                f"{drawing}")

    def task_summary(self):
        game = self._unwrapped
        rows, cols = game.field_size
        side = 2 * game.sight + 1
        sight = "the whole grid" if game.sight >= max(rows, cols) else f"a {side}x{side} square around itself"
        rule = ("all agents must load a food together (cooperative variant: every food's level is the sum of "
                "all agents' levels)" if game.force_coop else
                "a food is collected when the levels of the adjacent agents loading it add up to at least its level")
        return (f"Level-Based Foraging on a {rows}x{cols} grid with {self.n_agents} agents and {self.n_food} food "
                f"items. Agents and food have levels; {rule}. An agent loads a food from an adjacent cell (north, "
                f"south, west or east of it). Each agent observes {sight}. The team's goal is to collect all food "
                f"quickly; episodes last at most {self.episode_limit} steps.")

    def episode_sections(self, ep, max_steps):
        """LBF's features (MisoDICE B.2.2): which food was picked, when and by whom, what was left, each agent's
        load attempts; then the actions and a timeline of positions. The `obs` state layout gets the generic text."""
        if self.layout == "obs":
            return super().episode_sections(ep, max_steps)
        n, m, s = self.n_agents, self.n_food, ep.states
        agents = s[:, : 3 * n].reshape(-1, n, 3)
        foods = s[:, 3 * n: 3 * n + 3 * m].reshape(-1, m, 3)
        load = self._action_index("LOAD")
        events, picked_by = [], np.zeros(n, dtype=int)
        for t in range(ep.length):
            for j in np.flatnonzero((foods[t, :, 2] > 0) & (foods[t + 1, :, 2] <= 0)):
                r, c, level = foods[t, j]
                near = np.abs(agents[t, :, :2] - (r, c)).sum(1) == 1
                who = [i for i in range(n) if near[i] and ep.actions[t, i] == load]
                picked_by[who] += 1
                names = " and ".join(f"agent {i} (level {agents[t, i, 2]:g})" for i in who) or "unknown agents"
                events.append(f"- step {t + 1}: food {j} (level {level:g} at row {r:g}, column {c:g}) picked up by "
                              f"{names}")
        left = [j for j in range(m) if foods[-1, j, 2] > 0]
        total = int((foods[0, :, 2] > 0).sum())
        lines = [f"Food collected: {total - len(left)} of {total}."]
        lines += events or ["- no food was picked up"]
        for j in left:
            r, c, level = foods[-1, j]
            dist = np.abs(agents[-1, :, :2] - (r, c)).sum(1)
            lines.append(f"- food {j} (level {level:g} at row {r:g}, column {c:g}) was left; the closest agent at the "
                         f"end is {dist.min():g} cells away")
        attempts = (ep.actions == load).sum(0) if load is not None else np.zeros(n, dtype=int)
        agent_lines = [f"- agent {i} (level {agents[0, i, 2]:g}): row/column ({agents[0, i, 0]:g}, {agents[0, i, 1]:g})"
                       f" -> ({agents[-1, i, 0]:g}, {agents[-1, i, 1]:g}), {attempts[i]} load actions, shared in "
                       f"{picked_by[i]} pickups" for i in range(n)]
        timeline = []
        steps = ep_text.sample_steps(ep.length, max_steps)
        if steps:
            timeline = [f"Timeline ({len(steps)} of {ep.length + 1} steps; agents as (row, column), food left):"]
            for t in steps:
                where = ", ".join(f"A{i} ({agents[t, i, 0]:g},{agents[t, i, 1]:g})" for i in range(n))
                food = ", ".join(f"F{j} ({foods[t, j, 0]:g},{foods[t, j, 1]:g})" for j in range(m)
                                 if foods[t, j, 2] > 0) or "none"
                timeline.append(f"- step {t}: {where}; food {food}")
        return [ep_text.ending(self, ep), "\n".join(lines), "Agents, start -> end:\n" + "\n".join(agent_lines),
                ep_text.action_counts(self, ep), "\n".join(timeline)]

    def _action_index(self, name):
        names = [a.name for a in self._lbf_actions]
        return names.index(name) if name in names else None

    def agent_segment_report(self, obs, actions, rewards, obs_valid, step_valid):
        """Per-agent scorecards and timelines of a segment for CODI's agent-quality prompt (MultiAgentEnv's contract),
        from each agent's own observation (food (row, col, level) then itself, so offsets hold for partial sight
        too): Manhattan distance to the nearest food it sees, its change, its level, its loads and the food it
        picked up (a food next to it that is gone after its load: loading does not move the agent)."""
        obs, actions, obs_valid, step_valid = self.segment_arrays(obs, actions, obs_valid, step_valid)
        m, n, H = self.n_food, self.n_agents, len(obs)
        levels = self._unwrapped._observe_agent_levels
        food = obs[:, :, :3 * m].reshape(H, n, m, 3)
        me = obs[:, :, 3 * m:3 * m + (3 if levels else 2)]
        offset = np.rint(food[..., :2] - me[:, :, None, :2]).astype(np.int64)  # [H, agent, food, (drow, dcol)]
        present = food[..., 2] > 0
        dist = np.where(present, np.abs(offset).sum(-1), np.iinfo(np.int64).max)
        nearest = dist.argmin(-1)
        d = np.where(present.any(-1), dist.min(-1), -1)  # -1: no food in sight
        load = self._action_index("LOAD")
        names = ["stay" if a.name == "NONE" else a.name.lower() for a in self._lbf_actions]
        steps = np.flatnonzero(obs_valid)
        agents, pickup_steps = [], np.zeros(H, dtype=bool)
        for i in range(n):
            loads = next_to_food = picked = 0
            timeline = []
            for k, h in enumerate(steps):
                acted = bool(step_valid[h])
                row = {"t": int(h), "action": names[actions[h, i]] if acted else "none (episode over)",
                       "food_distance": int(d[h, i]) if d[h, i] >= 0 else None,
                       "nearest_food_offset": offset[h, i, nearest[h, i]].tolist() if d[h, i] >= 0 else None}
                if k and d[h, i] >= 0 and d[h - 1, i] >= 0:
                    row["delta_d"] = int(d[h, i] - d[h - 1, i])
                if acted and actions[h, i] == load:
                    loads += 1
                    adjacent = [tuple(o) for o, p, dd in zip(offset[h, i], present[h, i], dist[h, i]) if p and dd == 1]
                    next_to_food += bool(adjacent)
                    if adjacent and h + 1 < H and obs_valid[h + 1]:
                        after = {tuple(o) for o, p in zip(offset[h + 1, i], present[h + 1, i]) if p}
                        gone = sum(o not in after for o in adjacent)
                        picked += gone
                        pickup_steps[h] |= gone > 0
                        if gone:
                            row["picked_up"] = gone
                timeline.append(row)
            seen = [int(d[h, i]) for h in steps if d[h, i] >= 0]
            card = {"level": int(round(me[0, i, 2])) if levels else None,
                    "food_distance_start": seen[0] if seen else None, "food_distance_end": seen[-1] if seen else None,
                    "delta_d": seen[-1] - seen[0] if seen else None, "load_actions": loads,
                    "loads_next_to_food": next_to_food, "food_picked_up": picked}
            agents.append({"scorecard": card, "timeline": timeline})
        seen_food = present[steps].sum(-1).max(-1)  # the most food items any agent sees
        team = {"steps_with_a_pickup": int(pickup_steps.sum()), "food_in_sight_start": int(seen_food[0]),
                "food_in_sight_end": int(seen_food[-1])}
        legend = (
            "Positions are grid cells (row, column). food_distance = Manhattan distance (cells) from the agent to the "
            "nearest food it sees (null: none in sight; 1 = next to it, where it can load); nearest_food_offset = "
            "that food's (row, column) minus the agent's; delta_d = food_distance now minus at the previous step "
            "(negative: closer); scorecard delta_d = over the segment; level = the agent's level (the levels of the "
            "agents loading a food together must add up to the food's level); load_actions = its load actions, "
            "loads_next_to_food = those made next to a food; food_picked_up = foods next to it that were gone after "
            "its load (picked_up in the timeline). Team: steps_with_a_pickup; food_in_sight = the most food items any "
            "agent sees.")
        return {"legend": legend, "agents": agents, "team": team}
