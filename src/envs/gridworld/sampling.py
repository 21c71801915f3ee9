"""Random reachable states of the grid worlds (LCA's `random_states` pair source) and the rules that define them.

sample_state(rng) -> float32 [S] (get_state layout), a state set_state accepts and check_reachable passes:
  1. the item cells of an episode (the layout's; Victim-Rubble with random_free_objects draws them as reset does);
  2. a progress stage: k interactions (k uniform in 0..all of them), each drawn among those an agent allowed to do
     it could do then, i.e. stand next to the object in the floor reachable from the start room given the objects
     present at that moment. So Two-Switch opens the door only with both switches triggered, and Victim-Rubble
     removes Rubble2 only after Rubble1 and heals Victim2 only after both;
  3. the agents on distinct free cells reachable from the start room now (never on an object, never on Home:
     sampled states are not terminal), each facing a direction it could face there: any at a start cell (the
     reset draws it), elsewhere one it could have entered the cell moving in or could turn to (no wall ahead);
  4. the step count uniform in [a lower bound, episode_limit - 1]: the bound is the most moves an agent needed to
     get from the start room to its cell, and the interactions done (those only one agent can do count for it,
     the others split between the agents); a necessary condition, not an exact minimum.
check_reachable(state) raises ValueError listing every rule a state breaks (reachability_problems returns them).
"""
import math
import random
from collections import deque

import numpy as np

from envs.gridworld.base import MOVES, GridState


def as_generator(rng):
    """A numpy Generator from a Generator or an int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"sample_state: rng must be a numpy Generator (np.random.default_rng(seed)) or an int seed, "
                    f"got {type(rng).__name__}")


class StateSampler:
    """Mixin for a GridWorldEnv: sample_state, check_reachable and the reachability rules they share."""

    # ----- sampling -----
    def sample_state(self, rng):
        """A random reachable, non-terminal state (float32 [S], get_state layout); rng: Generator or int seed."""
        py = random.Random(int(as_generator(rng).integers(2 ** 63)))
        for _ in range(1000):
            s = self._sample_grid_state(py)
            if s is not None:
                return self._state_vector(s)
        raise RuntimeError(f"{self.name}.sample_state: no valid state in 1000 draws (a layout without room for "
                           f"the agents?)")

    def _sample_grid_state(self, py):
        saved = self._rng
        self._rng = py  # Victim-Rubble's random_free_objects draws the cells with the env's own rule
        try:
            cells = self._new_cells()
        finally:
            self._rng = saved
        s = GridState([], [], self._initial_status(), list(cells), 0, {})
        for _ in range(py.randint(0, self._total_interactions())):
            options = self._doable(s, self._region(s))
            if not options:
                break
            k = py.choice(options)
            s.status[k] += -1 if self.items[k].kind == "rubble" else 1  # rubble: present 1 -> removed 0
            self._derive_status(s)
        region = sorted(self._region(s))
        if len(region) < self.n_agents:
            return None
        s.pos = py.sample(region, self.n_agents)
        if self._success(s):
            return None
        starts = set(self._start_cells)
        s.facing = [py.choice([f for f in range(4) if self._facing_possible(s, p, f, region, starts)])
                    for p in s.pos]
        low = self._min_steps(s)
        if low > self.episode_limit - 1:
            return None
        s.t = py.randint(low, self.episode_limit - 1)
        s.events = self._events_from(s.status)
        return s

    # ----- the rules -----
    def _total_interactions(self):
        return sum(self._max_status(k) for k in self._actable())

    def _max_status(self, k):
        return getattr(self, "heal_steps", 1) if self.items[k].kind == "victim" else 1

    def _actable(self):
        """Items agents interact with (the rest, e.g. the door, follow from them: _derive_status)."""
        s = GridState([], [], self._initial_status(), [it.cell for it in self.items])
        return [k for k in range(len(self.items)) if any(self._can_act(a, k, s) for a in range(self.n_agents))]

    def _derive_status(self, s):
        """Set the statuses that follow from others (Two-Switch: the door)."""

    def _region(self, s):
        """Floor cells reachable from the start room given the objects in s (agents ignored)."""
        starts = [c for c in self._start_cells if self._solid_item(s, c) is None]
        seen, queue = set(starts), deque(starts)
        while queue:
            x, y = queue.popleft()
            for dx, dy in MOVES:
                nb = (x + dx, y + dy)
                if nb not in seen and not self._is_wall(s, nb) and self._solid_item(s, nb) is None:
                    seen.add(nb)
                    queue.append(nb)
        return seen

    def _doable(self, s, region):
        """Items an allowed agent could interact with now: not finished, a neighbour cell in the region."""
        out = []
        for k in self._actable():
            if s.status[k] == self._done_status(k):
                continue
            x, y = s.cells[k]
            if any((x + dx, y + dy) in region for dx, dy in MOVES) and \
                    any(self._can_act(a, k, s) for a in range(self.n_agents)):
                out.append(k)
        return out

    def _done_status(self, k):
        """An item's status once nothing more can be done with it."""
        return 0 if self.items[k].kind == "rubble" else self._max_status(k)

    def _facing_possible(self, s, cell, f, region, starts):
        if cell in starts:
            return True  # the reset draws any facing, and an agent may stay at its start cell
        ahead = (cell[0] + MOVES[f][0], cell[1] + MOVES[f][1])
        behind = (cell[0] - MOVES[f][0], cell[1] - MOVES[f][1])
        return not self._is_wall(s, ahead) or behind in region

    def _min_steps(self, s):
        """A lower bound on the steps needed to reach s (see the module docstring)."""
        moves = self._start_distances(s)
        bound = max((moves.get(p, math.inf) for p in s.pos), default=0)
        initial = GridState([], [], self._initial_status(), s.cells)
        done = {k: abs(s.status[k] - initial.status[k]) for k in self._actable()}
        per_agent, shared = [0] * self.n_agents, 0
        for k, n in done.items():
            able = [a for a in range(self.n_agents) if self._can_act(a, k, initial)]
            if len(able) == 1:
                per_agent[able[0]] += n
            else:
                shared += n
        return max(bound, max(per_agent), math.ceil((sum(per_agent) + shared) / self.n_agents))

    def _start_distances(self, s):
        """Moves from the nearest start cell to every cell of the region of s."""
        starts = [c for c in self._start_cells if self._solid_item(s, c) is None]
        dist, queue = {c: 0 for c in starts}, deque(starts)
        while queue:
            x, y = queue.popleft()
            for dx, dy in MOVES:
                nb = (x + dx, y + dy)
                if nb not in dist and not self._is_wall(s, nb) and self._solid_item(s, nb) is None:
                    dist[nb] = dist[(x, y)] + 1
                    queue.append(nb)
        return dist

    # ----- the validator -----
    def check_reachable(self, state):
        """Raise ValueError listing the rules (module docstring) that the state vector breaks."""
        problems = self.reachability_problems(state)
        if problems:
            raise ValueError(f"{self.name}: the state is not reachable: " + "; ".join(problems))

    def reachability_problems(self, state):
        """The rules the state vector breaks, in words ([] = reachable)."""
        v = np.asarray(state, dtype=np.float64)
        if v.shape != (self.get_state_size(),):
            return [f"expected a state vector of {self.get_state_size()} values, got shape {v.shape}"]
        s = self.decode_state(v)
        if not np.allclose(self._state_vector(s), v, atol=1e-5):
            return ["not a get_state() vector: positions and cells must be whole, facings one-hot, statuses "
                    "whole steps"]
        problems = self._cell_problems(s.cells)
        if problems:
            return problems
        for k in range(len(self.items)):
            if not 0 <= s.status[k] <= self._max_status(k):
                problems.append(f"{self.items[k].name} has status {s.status[k]} outside 0..{self._max_status(k)}")
        problems += self._order_problems(s)
        region = self._region(s)
        starts = set(self._start_cells)
        for i, p in enumerate(s.pos):
            who = f"agent {i} ({self.AGENT_NAMES[i]}) at {p}"
            if p not in region:
                problems.append(f"{who} is not on a floor cell reachable from {self.START_CHAMBER} (walls, objects "
                                f"and a locked door count)")
            elif not self._facing_possible(s, p, s.facing[i], region, starts):
                problems.append(f"{who} faces a wall it could neither have walked from nor turned to")
        if len(set(s.pos)) < len(s.pos):
            problems.append(f"two agents share a cell: {s.pos}")
        low = self._min_steps(s)
        if not low <= s.t <= self.episode_limit:
            problems.append(f"step {s.t} is outside [{low}, {self.episode_limit}] (at least {low} steps are needed "
                            f"to reach these positions and progress)")
        return problems

    def _cell_problems(self, cells):
        layout = [it.cell for it in self.items]
        if list(cells) != layout:
            return [f"object cells {list(cells)} differ from the layout's {layout}"]
        return []

    def _order_problems(self, s):
        """Replay the progress greedily: every change must have been possible once the earlier ones were done."""
        cur = GridState([], [], self._initial_status(), s.cells)
        pending = {k for k in self._actable() if s.status[k] != cur.status[k]}
        while pending:
            region = self._region(cur)
            ready = [k for k in sorted(pending) if k in self._doable(cur, region)]
            if not ready:
                break
            for k in ready:
                cur.status[k] = s.status[k]
                pending.discard(k)
            self._derive_status(cur)
        problems = [f"{self.items[k].name} was changed but no agent able to could have reached it first"
                    for k in sorted(pending)]
        self._derive_status(cur)
        problems += [f"{self.items[k].name} has status {s.status[k]}, but the other objects imply {cur.status[k]}"
                     for k in range(len(self.items)) if k not in self._actable() and cur.status[k] != s.status[k]]
        return problems
