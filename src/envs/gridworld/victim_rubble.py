"""Victim-Rubble (LCA sec. 5.1): the green agent heals victims, the orange agent removes rubble that blocks the
way to one of them. The rules, rewards and state layout shared with Two-Switch are in base.py."""
import math
from collections import deque

from envs.gridworld.base import MOVES, GridState, GridWorldEnv, Item
from envs.gridworld.oracle import VictimRubbleOracle
from envs.gridworld.policy import OraclePolicy
from envs.gridworld.sampling import StateSampler
from envs.multiagentenv import EnvValueError


class VictimRubbleEnv(VictimRubbleOracle, OraclePolicy, StateSampler, GridWorldEnv):
    """Victim-Rubble: the green agent heals victims, the orange agent removes rubble."""
    name = "victim_rubble"
    DEFAULT_LIMIT = 150
    AGENT_ROLES = (" who can heal victims", " who can remove rubble")
    ROLES = ("healer", "remover")
    HEALER, REMOVER = 0, 1
    # a = free victim (Victim1), b = blocked victim (Victim2); 1, 2 = rubble blocking Victim2, 3 = harmless rubble
    LAYOUT = (
        "###########",
        "#a.#...##b#",
        "#......##.#",
        "####...##.#",
        "#......##.#",
        "#3.#...##.#",
        "####...##.#",
        "#..#...##.#",
        "#......#.2#",
        "#..#....1.#",
        "###########",
    )
    CHAMBERS = (("Chamber0", 1, 1, 2, 3), ("Chamber1", 1, 5, 2, 6), ("Chamber2", 1, 8, 2, 9),
                ("Chamber3", 4, 1, 6, 9), ("Chamber4", 9, 4, 9, 9), ("Chamber5", 8, 1, 9, 2))
    START_CHAMBER = "Chamber3"
    LEFT_ROOMS = ("Chamber0", "Chamber1", "Chamber2")
    _EXTRA_ARGS = ("heal_steps", "success_requires_rubble", "random_free_objects")

    def __init__(self, heal_steps=1, success_requires_rubble=True, random_free_objects=False, **kwargs):
        self.heal_steps = int(heal_steps)
        if self.heal_steps < 1:
            raise EnvValueError(f"victim_rubble: heal_steps must be >= 1, got {heal_steps!r}")
        self.success_requires_rubble = bool(success_requires_rubble)
        self.random_free_objects = bool(random_free_objects)
        super().__init__(**kwargs)

    def _make_items(self, marks):
        items = [Item("victim", "Victim1", marks["a"][0]), Item("victim", "Victim2", marks["b"][0])]
        items += [Item("rubble", f"Rubble{n}", marks[str(n)][0]) for n in (1, 2, 3)]
        self._victims, self._rubble = [0, 1], [2, 3, 4]
        return items

    def _role_text(self, agent_id):
        return self.AGENT_ROLES[agent_id]

    def _zero_events(self):
        return {"victims_healed": 0, "rubble_removed": 0}

    def _events_from(self, status):
        return {"victims_healed": sum(status[k] >= self.heal_steps for k in self._victims),
                "rubble_removed": sum(1 - status[k] for k in self._rubble)}

    def _status_value(self, k, status):
        return status / self.heal_steps if self.items[k].kind == "victim" else float(status)

    def _status_from_value(self, k, value):
        return int(round(value * self.heal_steps)) if self.items[k].kind == "victim" else int(round(value))

    def _can_act(self, agent_id, k, s):
        kind = self.items[k].kind
        if kind == "victim":
            return agent_id == self.HEALER and s.status[k] < self.heal_steps
        return kind == "rubble" and agent_id == self.REMOVER and s.status[k] == 1

    def _interact(self, s, agent_id, k):
        if self.items[k].kind == "rubble":
            s.status[k] = 0
            s.events["rubble_removed"] += 1
            return 1, 1.0
        s.status[k] += 1
        if s.status[k] == self.heal_steps:
            s.events["victims_healed"] += 1
            return 1, 1.0
        return 0, 0.0

    def _event_count(self, s, success):
        return s.events["victims_healed"] + s.events["rubble_removed"]

    def _success(self, s):
        if any(s.status[k] < self.heal_steps for k in self._victims):
            return False
        return not self.success_requires_rubble or not any(s.status[k] for k in self._rubble)

    def _new_cells(self):
        cells = [it.cell for it in self.items]
        if not self.random_free_objects:
            return cells
        # the free victim and the harmless rubble anywhere in the left rooms, as long as the rubble blocks
        # nothing and neither stands next to a passage
        candidates = [c for c, n in sorted(self._chamber_of.items()) if n in self.LEFT_ROOMS
                      and not any(self._is_passage(nb) for nb in self._neighbours(c))]
        while True:
            victim, rubble = self._rng.sample(candidates, 2)
            cells[0], cells[4] = victim, rubble
            if self._layout_ok(cells):
                return cells

    def _cell_problems(self, cells):
        """The fixed objects at their layout cells; with random_free_objects Victim1 and Rubble3 where reset may
        put them."""
        if not self.random_free_objects:
            return super()._cell_problems(cells)
        layout = [it.cell for it in self.items]
        if [cells[k] for k in (1, 2, 3)] != [layout[k] for k in (1, 2, 3)]:
            return [f"Victim2, Rubble1 and Rubble2 must stay at {[layout[k] for k in (1, 2, 3)]}"]
        if not all(self._chamber_of.get(cells[k]) in self.LEFT_ROOMS for k in (0, 4)) or \
                any(self._is_passage(nb) for k in (0, 4) for nb in self._neighbours(cells[k])) or \
                cells[0] == cells[4] or not self._layout_ok(cells):
            return [f"Victim1 at {cells[0]} and Rubble3 at {cells[4]} are not a layout reset could draw"]
        return []

    @staticmethod
    def _neighbours(cell):
        return [(cell[0] + dx, cell[1] + dy) for dx, dy in MOVES]

    def _layout_ok(self, cells):
        """The harmless rubble disconnects no floor cell and the free victim is reachable past all rubble."""
        s = GridState([], [], self._initial_status(), list(cells))  # a fresh list: the item-cell cache keys on it
        start = self._start_cells[0]
        only3 = s.copy()
        only3.status[2] = only3.status[3] = 0
        reach = self._reachable(only3, start)
        floor = {(x, y) for x in range(self.width) for y in range(self.height)} - self._walls - set(cells)
        return floor <= reach and self._bfs(s, start, 0, self._facing_goal(cells[0])) < math.inf

    def _reachable(self, s, start):
        seen, queue = {start}, deque([start])
        while queue:
            cell = queue.popleft()
            for nb in self._neighbours(cell):
                if nb not in seen and not self._is_wall(s, nb) and self._solid_item(s, nb) is None:
                    seen.add(nb)
                    queue.append(nb)
        return seen

    # ----- text -----
    def _status_name(self, it):
        return "healed" if it.kind == "victim" else "present"

    def _status_meaning(self, it):
        if it.kind == "victim":
            steps = "" if self.heal_steps == 1 else f" (heal actions so far / {self.heal_steps})"
            return f"{it.name} healed fraction{steps}: 1 = healed, 0 = not yet; the victim blocks its cell either way"
        return f"1 while {it.name} is present (blocks its cell), 0 once the orange agent removed it"

    def _symbol(self, it, status):
        if it.kind == "victim":
            return "v" if status >= self.heal_steps else "V"
        return "R" if status else "."

    def _item_legend(self):
        return "V = victim to heal, v = healed victim, R = rubble"

    def _blocked_passages(self, s, k):
        """Passages next to rubble k, as (passage cell, room of the rubble, room beyond)."""
        out = []
        room = self._chamber_of.get(s.cells[k])
        for nb in self._neighbours(s.cells[k]):
            rooms = self._passage_rooms(nb) if self._is_passage(nb) else ()
            if room in rooms:
                out.append((nb, room, rooms[0] if rooms[1] == room else rooms[1]))
        return out

    def _item_lines(self, s):
        lines = []
        for k in self._victims:
            it = self.items[k]
            done = s.status[k] >= self.heal_steps
            state = "healed" if done else ("not healed" if self.heal_steps == 1 or not s.status[k]
                                           else f"healing, {s.status[k]} of {self.heal_steps} heal actions done")
            lines.append(f"{it.name}: {self._where(s.cells[k])}, {state}.")
        for k in self._rubble:
            it = self.items[k]
            if not s.status[k]:
                lines.append(f"{it.name}: removed (was at {self._where(s.cells[k])}).")
                continue
            blocks = []
            for _, room, beyond in self._blocked_passages(s, k):
                victims = sum(1 for v in self._victims if self._chamber_of.get(s.cells[v]) == beyond
                              and s.status[v] < self.heal_steps)
                extra = f" ({beyond} contains {victims} unhealed victim{'s' * (victims > 1)})" if victims else ""
                blocks.append(f"blocking the only passage between {room} and {beyond} from the side of {room}"
                              f"{extra}")
            lines.append(f"{it.name}: {self._where(s.cells[k])}, present, {'; '.join(blocks) or 'blocking nothing'}.")
        return lines

    def _blockers(self, s, v):
        """Present rubble that alone keeps the green agent (from where it stands) from victim v."""
        out = []
        for r in self._rubble:
            if s.status[r]:
                alone = s.copy()
                for k in self._rubble:
                    alone.status[k] = int(k == r)
                if self._bfs(alone, s.pos[self.HEALER], s.facing[self.HEALER],
                             self._facing_goal(s.cells[v])) == math.inf:
                    out.append(r)
        return out

    def _constraint_lines(self, s):
        lines = []
        for v in self._victims:
            if s.status[v] >= self.heal_steps or self._item_distance(s, self.HEALER, v) < math.inf:
                continue
            names = " and ".join(self.items[r].name for r in self._blockers(s, v)) or "rubble"
            lines.append(f"Current constraint: {self.items[v].name} ({self._chamber_of.get(s.cells[v])}) cannot be "
                         f"reached yet: {names} still block{'s' * (' and ' not in names)} the only way to it, so "
                         f"the orange agent must remove {'it' if ' and ' not in names else 'them'} before the "
                         f"green agent can heal it.")
        return lines or ["Current constraint: none; the green agent can reach every unhealed victim."]

    def task_dependencies(self):
        s = GridState([], [], self._initial_status(), list(self._s.cells))
        s.pos, s.facing = [self._start_cells[0]] * 2, [0, 0]
        blocked = [v for v in self._victims if self._blockers(s, v)]
        free = [self.items[v].name for v in self._victims if v not in blocked]
        harmless = [self.items[r].name for r in self._rubble
                    if not any(r in self._blockers(s, v) for v in blocked)]
        lines = ["The green agent alone can heal victims and the orange agent alone can remove rubble."]
        for v in blocked:
            names = " and ".join(self.items[r].name for r in self._blockers(s, v))
            lines.append(f"The orange agent must remove {names} before the green agent can reach "
                         f"{self.items[v].name} ({self._chamber_of.get(s.cells[v])}): they block the only passage "
                         f"to it.")
        if free:
            lines.append(f"The green agent always prioritises rescuing victims whose path is free of any rubble "
                         f"({', '.join(free)}), waiting for the orange agent to remove the rubble and clear the path.")
        if harmless:
            later = "is still needed for success but can wait" if self.success_requires_rubble else "is not needed"
            lines.append(f"{', '.join(harmless)} block{'s' * (len(harmless) == 1)} nothing; removing "
                         f"{'it' if len(harmless) == 1 else 'them'} {later}.")
        return " ".join(lines)

    def _interact_meaning(self):
        where = "faced" if self.interact_mode == "facing" else "adjacent (faced first)"
        return (f"interact: the green agent heals the {where} victim, the orange agent removes the {where} rubble "
                f"(other roles cannot)")

    def task_summary(self):
        done = "heal both victims and remove all three rubbles" if self.success_requires_rubble \
            else "heal both victims"
        how = "standing next to it, facing it" if self.interact_mode == "facing" else "standing next to it"
        return (f"Victim-Rubble grid world ({self.width}x{self.height} cells, six chambers joined by one-cell "
                f"passages): the green agent 0 can only heal victims, the orange agent 1 can only remove rubble; "
                f"both start at random cells of the central Chamber3. Victims and rubble block movement; an agent "
                f"acts on one by {how} and using interact"
                + ("" if self.heal_steps == 1 else f" ({self.heal_steps} times to heal a victim)") +
                f". One victim lies in a left room with a free path; the other lies at the end of a long corridor "
                f"(Chamber4, upper right) whose only way in is blocked by two rubbles in Chamber5; a third rubble "
                f"blocks nothing. The team must {done}: the orange agent should first clear the blocking rubble "
                f"while the green agent heals the accessible victim. The agents cannot communicate; everything is "
                f"fully observed. Episodes last at most {self.episode_limit} steps.")

    def reward_description(self):
        n_events = len(self._victims) + (len(self._rubble) if self.success_requires_rubble else 2)
        done = "every victim is healed and every rubble removed" if self.success_requires_rubble \
            else "every victim is healed"
        text = self._reward_text("a victim is healed or a rubble is removed", "+1 to the orange agent per rubble "
                                 "removed, +1 to the green agent per victim healed",
                                 f"{n_events * self.event_reward + self.success_reward:g}")
        return f"{text} Success = {done}."
