"""LCA's rule-based progress oracle for the grid worlds (research notes lca.md 2.4), kept apart from the envs
themselves: the synthetic LCA rankings and labelers use it, the env dynamics do not.

subgoal(i[, state]) / subgoal_distance give agent i's current sub-goal and the number of moves and turns
(teammate ignored) before it can interact with it / stands on it. Two-Switch: the switches split between the
agents so that both are triggered soonest, the last switch goes to the closer agent while the other heads home as
if the door were open, then home. Victim-Rubble: green -> nearest reachable unhealed victim (if none, the nearest
one counting rubble as passable); orange -> nearest rubble that alone would keep green from a victim, then any
rubble. The mixins below are combined with the env classes in two_switch.py and victim_rubble.py.

pair_oracle(state, actions, next_state, i) -> "better" | "worse" | "equal" (LCA's "human heuristic" ranking of
agent i's action in one transition; state vectors in get_state layout, actions the joint action):
  1. i stayed still (action 0) -> equal (LCA gives a staying agent no reward; it is never ranked).
  2. i caused an event: its own action, replayed in the env's order (agent 0 acts first), triggered a switch,
     healed (or, with heal_steps > 1, treated) a victim, removed a rubble or reached home -> better.
  3. otherwise i's sub-goal is judged from s (subgoal(i, s), teammate ignored) and its distance (moves and turns)
     is measured in s and in s' the same way: shorter in s' -> better, longer -> worse, the same (a blocked move,
     an interact that did nothing, both unreachable) -> equal.
The teammate's action only matters through s' (a door it opened, a rubble it removed).
"""
import math

import numpy as np

from envs.gridworld.base import Subgoal

PAIR_LABELS = ("better", "worse", "equal")


class ProgressOracle:
    """Mixin for a GridWorldEnv whose subclass implements `_subgoal(s, i) -> Subgoal`."""

    def _item_distance(self, s, agent_id, k, rubble_passable=False):
        return self._bfs(s, s.pos[agent_id], s.facing[agent_id], self._facing_goal(s.cells[k]), rubble_passable)

    def subgoal(self, agent_id, state=None):
        """The agent's current sub-goal and its distance (see Subgoal) in the current or a given state."""
        s = self._s if state is None else self.decode_state(state)
        return self._subgoal(s, agent_id)

    def subgoal_distance(self, agent_id, state=None):
        return self.subgoal(agent_id, state).distance

    def goal_distance(self, s, agent_id, goal, blocked=()):
        """The distance of agent_id in GridState s to a sub-goal chosen in another state (see Subgoal.kind);
        `blocked`: cells to treat as occupied (the teammate's, for the greedy policy)."""
        pos, facing = s.pos[agent_id], s.facing[agent_id]
        if goal.kind == "done":
            return 0
        if goal.kind == "park":  # the greedy policy's: back to any start cell
            starts = set(self._start_cells)
            return self._bfs(s, pos, facing, lambda p, f: p in starts, blocked=blocked)
        if goal.kind in ("interact", "approach"):
            return self._bfs(s, pos, facing, self._facing_goal(goal.cell), goal.kind == "approach", blocked)
        if goal.kind == "stand_open":
            s = s.copy()
            s.status[self._door] = 1
        return self._bfs(s, pos, facing, lambda p, f: p == goal.cell, blocked=blocked)

    def pair_oracle(self, state, actions, next_state, agent_id):
        """"better" | "worse" | "equal" for agent_id's action in state -> next_state (the rule: module docstring)."""
        i, acts = int(agent_id), [int(a) for a in np.ravel(actions)]
        if len(acts) != self.n_agents or not 0 <= i < self.n_agents:
            raise ValueError(f"{self.name}.pair_oracle: expected {self.n_agents} actions and an agent in "
                             f"0..{self.n_agents - 1}, got actions {acts} and agent {agent_id}")
        if acts[i] == self.stay_action:
            return "equal"
        s, after = self.decode_state(state), self.decode_state(next_state)
        if self._caused_event(s, acts, i):
            return "better"
        goal = self._subgoal(s, i)
        d0, d1 = self.goal_distance(s, i, goal), self.goal_distance(after, i, goal)
        return "better" if d1 < d0 else "worse" if d1 > d0 else "equal"

    def _caused_event(self, s, acts, i):
        """Whether agent i's own action, replayed in order, changed an item (or reached home)."""
        s = s.copy()
        for j in range(i):
            self._act(s, j, acts[j])
        status = list(s.status)
        events, _ = self._act(s, i, acts[i])
        return events > 0 or s.status != status


class TwoSwitchOracle(ProgressOracle):
    def _subgoal(self, s, i):
        if self._success(s):
            return Subgoal("done", s.cells[self._home], 0, "done")
        home_goal = (lambda p, f: p == s.cells[self._home])
        todo = [k for k in self._switches if not s.status[k]]
        if not todo:
            return Subgoal("reach home", s.cells[self._home], self._bfs(s, s.pos[i], s.facing[i], home_goal), "stand")
        j = 1 - i
        dist = {(a, k): self._item_distance(s, a, k) for a in (i, j) for k in todo}
        if len(todo) == 1:
            k = todo[0]
            mine = dist[(i, k)] < dist[(j, k)] or (dist[(i, k)] == dist[(j, k)] and i < j)
        else:
            # the division of labour that finishes both switches soonest (then the smaller total)
            a, b = todo
            keep = (max(dist[(i, a)], dist[(j, b)]), dist[(i, a)] + dist[(j, b)], i)
            swap = (max(dist[(i, b)], dist[(j, a)]), dist[(i, b)] + dist[(j, a)], j)
            k, mine = (a if keep <= swap else b), True
        if mine:
            return Subgoal(f"trigger {self.items[k].name}", s.cells[k], dist[(i, k)])
        # the teammate takes the last switch: walk to home as if the door were open
        opened = s.copy()
        opened.status[self._door] = 1
        return Subgoal("reach home (door still locked)", s.cells[self._home],
                       self._bfs(opened, s.pos[i], s.facing[i], home_goal), "stand_open")


class VictimRubbleOracle(ProgressOracle):
    def _blocking(self, s, k):
        """Rubble k alone keeps the healer from reaching an unhealed victim."""
        alone = s.copy()
        for r in self._rubble:
            alone.status[r] = int(r == k)
        healer = s.pos[self.HEALER]
        for v in self._victims:
            if s.status[v] < self.heal_steps:
                if self._bfs(alone, healer, s.facing[self.HEALER], self._facing_goal(s.cells[v])) == math.inf:
                    return True
        return False

    def _subgoal(self, s, i):
        if i == self.HEALER:
            todo = [k for k in self._victims if s.status[k] < self.heal_steps]
            if not todo:
                return Subgoal("done", s.pos[i], 0, "done")
            best = min((self._item_distance(s, i, k), k) for k in todo)
            if best[0] == math.inf:  # wait for the orange agent: head for the nearest victim past the rubble
                best = min((self._item_distance(s, i, k, rubble_passable=True), k) for k in todo)
                return Subgoal(f"approach {self.items[best[1]].name} (blocked by rubble)", s.cells[best[1]], best[0],
                               "approach")
            return Subgoal(f"heal {self.items[best[1]].name}", s.cells[best[1]], best[0])
        todo = [k for k in self._rubble if s.status[k]]
        if not todo:
            return Subgoal("done", s.pos[i], 0, "done")
        ranked = sorted((not self._blocking(s, k), self._item_distance(s, i, k), k) for k in todo)
        reachable = [r for r in ranked if r[1] < math.inf]
        _, d, k = (reachable or ranked)[0]
        return Subgoal(f"remove {self.items[k].name}", s.cells[k], d)
