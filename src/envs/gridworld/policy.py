"""A greedy joint policy that follows the progress oracle (oracle.py): LCA's key-step episodes and the tests that
the oracle's sub-goals really solve the grids.

oracle_actions(state=None, rng=None) -> int64 [n_agents], per agent:
  1. interact when an object it may act on is in reach (a switch, a victim, a rubble: always progress);
  2. when it has nothing left to do (sub-goal "done") walk back to the start room and stay there, out of the dead
     ends its teammate may still need; stay while it must wait (the green agent's "approach Victim2 (blocked by
     rubble)": waiting where it is keeps it out of the passage the orange agent has to clear);
  3. otherwise the move that brings it closest to its sub-goal with the teammate's cell counted as occupied; when
     the teammate blocks every way, the move it would take ignoring the teammate (a move into the teammate only
     turns the agent);
  4. collisions: an agent whose move is blocked by a teammate that interacts waits for it; if that teammate stays
     or is itself blocked, one of the two steps aside to a free neighbouring cell (the waiting one if one is
     waiting, else one drawn by `rng`), so head-on meetings in one-cell passages resolve.
Ties between equally good moves are broken by `rng` (a numpy Generator or int seed; default: one Generator per
env seeded 0), which also keeps two agents from mirroring each other forever.
"""
import math

import numpy as np

from envs.gridworld.base import INTERACT, MOVES, STAY, Subgoal
from envs.gridworld.sampling import as_generator

WAITING = ("done", "approach")


class OraclePolicy:
    """Mixin for a GridWorldEnv with a ProgressOracle."""

    def oracle_actions(self, state=None, rng=None):
        """The greedy joint action (int64 [n_agents]) in the current state or a get_state() vector."""
        s = self._s if state is None else self.decode_state(state)
        if rng is None:
            if getattr(self, "_policy_rng", None) is None:
                self._policy_rng = np.random.default_rng(0)
            rng = self._policy_rng
        rng = as_generator(rng)
        plans = [self._plan(s, i, rng) for i in range(self.n_agents)]
        acts = [p[0] for p in plans]
        for i, (_, blocker, _) in enumerate(plans):
            if blocker is None or acts[i] == STAY:
                continue
            j = blocker
            if acts[j] == INTERACT:
                acts[i] = STAY  # the teammate is busy here; wait for it
            elif not self._vacates(s, j, acts[j], s.pos[i]):
                self._step_aside(s, i, j, plans, acts, rng)
        return np.asarray(acts, dtype=np.int64)

    def _plan(self, s, i, rng):
        """(action, teammate whose cell the move goes into or None, sub-goal kind) for agent i."""
        avail = self._avail(s, i)
        goal = self._subgoal(s, i)
        if avail[INTERACT]:
            return INTERACT, None, goal.kind
        if goal.kind == "done" and s.pos[i] not in self._start_cells:
            goal = Subgoal("park in the start room", s.pos[i], math.inf, "park")
        elif goal.kind in WAITING:
            return STAY, None, goal.kind
        others = {j: p for j, p in enumerate(s.pos) if j != i}
        moves = [a for a in rng.permutation(4) + 1 if avail[a]]
        now = self.goal_distance(s, i, goal, blocked=set(others.values()))
        best = self._best_move(s, i, goal, moves, others, ignore_teammates=False)
        if best[0] < now:
            return best[1], None, goal.kind
        alone = self._best_move(s, i, goal, moves, others, ignore_teammates=True)
        if alone[0] == math.inf:
            return STAY, None, goal.kind
        target = self._target(s, i, alone[1])
        blocker = next((j for j, p in others.items() if p == target), None)
        return alone[1], blocker, goal.kind

    def _best_move(self, s, i, goal, moves, others, ignore_teammates):
        """(distance after the move, move) of the best move; teammates ignored or as obstacles."""
        best = (math.inf, STAY)
        for a in moves:
            after = s.copy()
            if ignore_teammates:
                after.pos = [p if j == i else (-1, -1) for j, p in enumerate(after.pos)]
            self._act(after, i, int(a))
            blocked = () if ignore_teammates else set(others.values())
            d = self.goal_distance(after, i, goal, blocked=blocked)
            if d < best[0]:
                best = (d, int(a))
        return best

    @staticmethod
    def _target(s, i, action):
        dx, dy = MOVES[action - 1]
        return s.pos[i][0] + dx, s.pos[i][1] + dy

    def _vacates(self, s, j, action, cell):
        """Whether agent j's action moves it out of its cell into a free cell other than `cell`."""
        if not 1 <= action <= 4:
            return False
        target = self._target(s, j, action)
        return target != cell and target not in s.pos and not self._is_wall(s, target) \
            and self._solid_item(s, target) is None

    def _free_sides(self, s, i):
        x, y = s.pos[i]
        return [a for a, (dx, dy) in enumerate(MOVES, start=1)
                if (x + dx, y + dy) not in s.pos and not self._is_wall(s, (x + dx, y + dy))
                and self._solid_item(s, (x + dx, y + dy)) is None]

    def _step_aside(self, s, i, j, plans, acts, rng):
        """Agent i is blocked by j, which will not leave: one of them moves to a free neighbouring cell."""
        sides = {k: self._free_sides(s, k) for k in (i, j)}
        able = [k for k in (i, j) if sides[k]]
        if not able:
            return
        waiting = [k for k in able if plans[k][2] in WAITING]
        k = waiting[0] if waiting else able[int(rng.integers(len(able)))]
        acts[k] = int(rng.choice(sides[k]))
        if k == i:
            return
        acts[i] = STAY  # j makes room; i moves in next step
