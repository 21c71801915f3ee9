"""Two-Switch (LCA sec. 5.1): both agents alike; trigger both switches in the upper room, then reach home
through the door they open. The rules, rewards and state layout shared with Victim-Rubble are in base.py."""
from envs.gridworld.base import GridWorldEnv, Item
from envs.gridworld.oracle import TwoSwitchOracle
from envs.gridworld.policy import OraclePolicy
from envs.gridworld.sampling import StateSampler


class TwoSwitchEnv(TwoSwitchOracle, OraclePolicy, StateSampler, GridWorldEnv):
    """Two-Switch: trigger both switches (any agent), then reach home through the opened door."""
    name = "two_switch"
    DEFAULT_LIMIT = 100
    LAYOUT = (
        "#########",
        "#S.....S#",
        "#.......#",
        "#.......#",
        "####D####",
        "#.......#",
        "#.......#",
        "#...H...#",
        "#########",
    )
    CHAMBERS = (("the upper room", 1, 5, 7, 7), ("the lower room", 1, 1, 7, 3))
    START_CHAMBER = "the upper room"

    def _make_items(self, marks):
        switches = sorted(marks["S"])
        items = [Item("switch", f"Switch{n + 1}", c) for n, c in enumerate(switches)]
        items.append(Item("door", "Door", marks["D"][0]))
        items.append(Item("home", "Home", marks["H"][0]))
        self._switches = list(range(len(switches)))
        self._door = len(switches)
        self._home = self._door + 1
        return items

    def _zero_events(self):
        return {"switches_triggered": 0, "door_open": 0}

    def _events_from(self, status):
        return {"switches_triggered": sum(status[k] for k in self._switches), "door_open": status[self._door]}

    def _can_act(self, agent_id, k, s):
        return self.items[k].kind == "switch" and not s.status[k]

    def _interact(self, s, agent_id, k):
        s.status[k] = 1
        s.events["switches_triggered"] += 1
        if all(s.status[j] for j in self._switches):
            s.status[self._door] = 1
            s.events["door_open"] = 1
        return 1, 1.0

    def _derive_status(self, s):
        s.status[self._door] = int(all(s.status[k] for k in self._switches))

    def _on_enter(self, s, agent_id):
        return (1, 1.0) if s.pos[agent_id] == s.cells[self._home] else (0, 0.0)

    def _success(self, s):
        return s.cells[self._home] in s.pos

    def _event_count(self, s, success):
        return s.events["switches_triggered"] + int(success)

    def _status_name(self, it):
        return {"switch": "triggered", "door": "open"}[it.kind]

    def _status_meaning(self, it):
        if it.kind == "switch":
            return f"1 if {it.name} has been triggered (it stays triggered), else 0"
        return "1 if the door is open (both switches triggered; agents can pass), 0 while locked (a wall)"

    def _symbol(self, it, status):
        return {"switch": "s" if status else "S", "door": "/" if status else "D", "home": "H"}[it.kind]

    def _item_legend(self):
        return "S = switch not triggered, s = switch triggered, D = locked door, / = open door, H = home (goal)"

    def _item_lines(self, s):
        lines = [f"{it.name}: {self._where(s.cells[k])}, {'triggered' if s.status[k] else 'not triggered'}."
                 for k, it in enumerate(self.items) if it.kind == "switch"]
        door = self.items[self._door]
        state = "open" if s.status[self._door] else "locked (it opens once both switches are triggered)"
        lines.append(f"{door.name}: {self._where(s.cells[self._door])}, {state}.")
        lines.append(f"Home (goal): {self._where(s.cells[self._home])}.")
        return lines

    def _constraint_lines(self, s):
        if s.status[self._door]:
            return ["Current constraint: none; the door is open and home can be reached."]
        todo = [self.items[k].name for k in self._switches if not s.status[k]]
        return [f"Current constraint: the door stays locked, and home out of reach, until {' and '.join(todo)} "
                f"{'is' if len(todo) == 1 else 'are'} triggered."]

    def task_dependencies(self):
        return ("Both agents have the same abilities. Home can be reached only through the door, which opens only "
                "after both switches are triggered. The agents cannot communicate, so they must split the work: "
                "each should commit to one switch (the one it can reach first) and trust its teammate to take the "
                "other; both heading for the same switch, or switching targets whenever the teammate moves, wastes "
                "steps. Once both switches are triggered either agent can walk home.")

    def _interact_meaning(self):
        where = "faced" if self.interact_mode == "facing" else "adjacent (faced first)"
        return f"interact: trigger the {where} switch"

    def task_summary(self):
        how = "standing next to it, facing it" if self.interact_mode == "facing" else "standing next to it"
        return (f"Two-Switch grid world ({self.width}x{self.height} cells with outer walls): two agents with the same "
                f"abilities, the green agent 0 and the orange agent 1, start at random cells of the upper room. "
                f"A locked door in the wall between the upper and the lower room opens only once both switches "
                f"(in the upper room's top-left and top-right corners) have been triggered; an agent triggers a "
                f"switch by {how} and using interact. The team succeeds as soon as one agent reaches home in "
                f"the lower room, so the agents should split the switches between them. They cannot communicate; "
                f"everything is fully observed. Episodes last at most {self.episode_limit} steps.")

    def reward_description(self):
        return self._reward_text("a switch is triggered or an agent arrives home", "+1 to the agent that "
                                 "triggers a switch or arrives home",
                                 f"{3 * self.event_reward + self.success_reward:g}")
