"""The grid-world base of LCA's two grid worlds, Two-Switch and Victim-Rubble (Lin et al., LLM-guided credit
assignment, sec. 5.1).

No code of the paper is public; both maps are designed from its text (and the notes in
shared/research/lca.md) in pure Python. Two agents, fully observable, discrete actions.

Coordinates: cell (x, y), x = column growing to the right, y = row growing upwards, (0, 0) the
bottom-left corner (the convention of the authors' earlier grid prompts). The Victim-Rubble map
is laid out so that the paper's example prompt holds literally: "Rubble1: Chamber5 (8,1),
blocking the only passage between Chamber5 and 3 from the side of Chamber5", "Rubble2: Chamber5
(9,2), blocking the only passage reaching Chamber4 which contains one Victim", an agent "at
Chamber3 (4,3)". Chamber3 is the central room where the agents start, the blocked victim lies at
the upper end of a long corridor (Chamber4, upper right), the free victim and the harmless rubble
are in the left rooms.

Actions (both agents): 0 stay still, 1 up, 2 down, 3 left, 4 right, 5 interact. A move turns the
agent to face that direction and enters the cell if it is free; a move towards an object (switch,
victim, rubble) or the teammate only turns the agent. The paper says agents "must move to the
switches, face the switches and trigger them", so by default `interact` acts on the object the
agent faces (`interact_mode: facing`); `adjacent` lets it act on any neighbouring object instead.
Agents act one after the other in index order within a step (agent 0 first), so agent 0 wins
a contested cell. Masks: stay is always available; a move is masked when it can change nothing
(a wall or a locked door ahead, or an object ahead that the agent already faces); interact is
masked unless there is an object this agent can act on.

Two-Switch: both agents alike (green agent 0, orange agent 1), start at random cells of the upper
room; two switches in the upper room's far corners; the door to the lower room opens once both
switches are triggered (they stay triggered); success = an agent steps on home.
Victim-Rubble: agent 0 (green) alone can heal victims, agent 1 (orange) alone can remove rubble;
rubble and victims block movement (a healed victim still lies there). Success = every victim healed
and (`success_requires_rubble`, default, "the orange agent must clear all rubble") every rubble
removed.

Team reward, our reading of the paper ("each agent receives a default reward of 0 for failure and
1 when the team completes the task. Additionally, both agents earn 1 if any agent either handles a
switch, victim, or rubble, or arrives home. A step penalty of -n/nmax is applied"):
  + event_reward (1) for every switch triggered, victim healed, rubble removed, or arrival at home,
  + success_reward (1) on success,
  - n/n_max, n = steps taken, n_max = episode_limit, applied once. `step_penalty` says when:
    "on_success" (default: success pays 1 - n/n_max, failure 0, as issue 3 asks), "at_end" (also
    -1 at a time-limit end; the y axis of the paper's Two-Switch plots starts at -1, which suggests
    this),
    "per_step" (-1/n_max every step, same undiscounted return as "at_end") or "none".
The paper quotes optimal returns "5 - step penalty" (Two-Switch) and "7 - step penalty"
(Victim-Rubble); our literal reading gives 4 (2 switches + home + success) and 6 (2 victims +
3 rubble + success). Both gaps are exactly one more unit on success, so `success_reward: 2`
reproduces the paper's scale; the curves are also said to include the individual reward.
Hand-crafted individual reward (`individual_reward: true`, the paper's baseline): +1 to the agent
that triggers a switch or arrives home (Two-Switch), to the orange agent per rubble removed and to
the green agent per victim healed (Victim-Rubble). With common_reward=False the env returns
team + individual per agent, shape (n_agents,); with common_reward=True it returns
team + sum (or mean, `reward_scalarisation`) of the individual rewards: the team reward is already
every agent's reward, so it is not multiplied by the number of agents.

Episodes end with terminated=True on success; at `episode_limit` steps without success with
terminated=False and info["episode_limit"]=True. info carries `success` (0/1) and cumulative event
counts of the episode.

State layout: per agent position (x, y in cells) and facing one-hot, then per object its cell and
status, then the elapsed-time fraction; see state_schema(). Observations (per agent, ego first):
ego position (normalised to [0, 1] by the grid size) and facing, ego role one-hot, teammate
position and facing, then the objects as in the state with normalised cells. In Two-Switch the
"role" is only the agent's colour (both can do everything).

Text for prompts: describe_state(state) draws the map (legend, coordinate convention) and lists
agents and objects with their chamber, e.g. "Rubble1: Chamber5 (8,1), present, blocking the only
passage between Chamber5 and Chamber3 from the side of Chamber5"; describe_agent_view(state, i)
tells the same from agent i's side ("You are the ego agent: ...", "Your teammate: ...").

Progress oracle (for synthetic LCA rankings, lca.md 2.4; in oracle.py): subgoal(i[, state]) / subgoal_distance
give agent i's current sub-goal and the number of moves and turns (teammate ignored) before it can
interact with it / stands on it. Two-Switch: the switches split between the agents so that both are
triggered soonest, the last switch goes to the closer agent while the other heads home as if the
door were open, then home. Victim-Rubble: green -> nearest reachable unhealed victim (if none, the
nearest one counting rubble as passable); orange -> nearest rubble that alone would keep green from
a victim, then any rubble.

Known deviations from the paper: the exact maps, grid sizes, episode lengths and start regions
are not given there (ours: Two-Switch 9x9, limit 100, about 11 steps (9-14) for a policy that
follows the oracle below; Victim-Rubble 11x11, limit 150, about 32 steps (28-37); the limits leave
~5-9x that for exploration); agents move in cardinal directions instead of
MiniGrid's turn/forward actions; one interact action heals a victim (`heal_steps`, the authors'
earlier USAR world needed 3).
"""
import math
import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args
from envs.rng import make_random, random_state

STAY, UP, DOWN, LEFT, RIGHT, INTERACT = range(6)
MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # facing index f = action - 1
DIR_NAMES = ("up", "down", "left", "right")
STEP_PENALTIES = ("on_success", "at_end", "per_step", "none")
INTERACT_MODES = ("facing", "adjacent")


@dataclass
class Item:
    kind: str  # switch | victim | rubble | door | home
    name: str  # as in the prompts: Switch1, Victim2, Rubble1, Door, Home
    cell: tuple


@dataclass
class GridState:
    """Everything that changes during an episode (walls are fixed by the layout)."""
    pos: list  # (x, y) per agent
    facing: list  # facing index per agent
    status: list  # per item: switch triggered 0/1, victim heal count, rubble present 0/1, door open 0/1, home 0
    cells: list  # per item (x, y); fixed within an episode
    t: int = 0
    events: dict = field(default_factory=dict)

    def copy(self):
        return GridState(list(self.pos), list(self.facing), list(self.status), list(self.cells), self.t,
                         dict(self.events))


@dataclass(frozen=True)
class Subgoal:
    """What the rule-based oracle thinks an agent should do next, and how many actions it needs
    (moves and turns, ignoring the teammate) before it can interact / stands there."""
    name: str
    cell: tuple
    distance: float  # math.inf when it cannot be reached now
    # how the distance is measured (oracle.py): interact = until facing the cell, approach = the same counting rubble
    # as passable, stand = until standing on it, stand_open = the same with the door open, done = nothing left,
    # park = back in the start room (the greedy policy's, policy.py)
    kind: str = "interact"


def _parse_layout(rows):
    """rows top (largest y) first -> (width, height, walls set, {char: [cells]})."""
    height, width = len(rows), len(rows[0])
    walls, marks = set(), {}
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"layout row {r} has {len(row)} cells, expected {width}")
        for x, ch in enumerate(row):
            cell = (x, height - 1 - r)
            if ch == "#":
                walls.add(cell)
            elif ch != ".":
                marks.setdefault(ch, []).append(cell)
    return width, height, walls, marks


class GridWorldEnv(MultiAgentEnv):
    """Grid, movement, masks, rewards, observations, text; subclasses define the map and the rules."""
    LAYOUT: tuple = ()
    CHAMBERS: tuple = ()  # (name, x0, y0, x1, y1) inclusive rectangles
    START_CHAMBER: str = ""
    AGENT_NAMES = ("green agent", "orange agent")
    ROLES = ("agent", "agent")  # agent_roles(): equal roles = interchangeable agents (one shared LCA potential)
    stay_action = STAY
    DEFAULT_LIMIT = 100
    RENDERS = "text"  # render() prints describe_state()
    name = "gridworld"
    _BASE_ARGS = ("episode_limit", "individual_reward", "interact_mode", "step_penalty", "event_reward",
                  "success_reward", "seed", "common_reward", "reward_scalarisation")
    _EXTRA_ARGS: tuple = ()

    @classmethod
    def accepted_args(cls, env_args):
        return cls._BASE_ARGS + cls._EXTRA_ARGS

    def __init__(self, episode_limit=None, individual_reward=False, interact_mode="facing",
                 step_penalty="on_success", event_reward=1.0, success_reward=1.0, seed=None, common_reward=True,
                 reward_scalarisation="sum", **kwargs):
        reject_unknown_args(self.name, kwargs, self.accepted_args(kwargs))
        if interact_mode not in INTERACT_MODES:
            raise EnvValueError(f"{self.name}: interact_mode must be one of {INTERACT_MODES}, got {interact_mode!r}")
        if step_penalty not in STEP_PENALTIES:
            raise EnvValueError(f"{self.name}: step_penalty must be one of {STEP_PENALTIES}, got {step_penalty!r}")
        self.set_reward_settings(self.name, common_reward, reward_scalarisation)
        limit = self.DEFAULT_LIMIT if episode_limit is None else int(episode_limit)
        if limit < 1:
            raise EnvValueError(f"{self.name}: episode_limit must be a positive number of steps, got {episode_limit!r}")
        self.episode_limit = limit
        self.individual_reward = bool(individual_reward)
        self.interact_mode = interact_mode
        self.step_penalty = step_penalty
        self.event_reward = float(event_reward)
        self.success_reward = float(success_reward)
        self.n_agents = 2
        self.n_actions = 6

        self.width, self.height, self._walls, marks = _parse_layout(self.LAYOUT)
        self.items = self._make_items(marks)
        self._chamber_of = {}
        for name, x0, y0, x1, y1 in self.CHAMBERS:
            for x in range(x0, x1 + 1):
                for y in range(y0, y1 + 1):
                    self._chamber_of[(x, y)] = name
        self._start_cells = [c for c, n in self._chamber_of.items()
                             if n == self.START_CHAMBER and c not in {it.cell for it in self.items}]
        self._start_cells.sort()
        self._norm = (1.0 / (self.width - 1), 1.0 / (self.height - 1))
        self._s = None
        self._cells_ref, self._cell_item = None, {}
        # a valid state right away; the first reset() then replays this same first episode start
        self._rng = random.Random(seed)
        self.reset()
        self._rng = random.Random(seed)

    # ----- map and rules (subclasses) -----
    def _make_items(self, marks):
        raise NotImplementedError

    def _can_act(self, agent_id, k, s):
        """Whether this agent may interact with item k in state s."""
        raise NotImplementedError

    def _interact(self, s, agent_id, k):
        """Apply an (allowed) interaction; return (team events, individual reward of the agent)."""
        raise NotImplementedError

    def _on_enter(self, s, agent_id):
        """After agent_id moved; return (team events, individual reward)."""
        return 0, 0.0

    def _success(self, s):
        raise NotImplementedError

    def _event_count(self, s, success):
        """Rewarded events of the episode so far."""
        raise NotImplementedError

    def _new_cells(self):
        """Item cells for a new episode (fixed maps: the layout's)."""
        return [it.cell for it in self.items]

    def _status_value(self, k, status):
        """The status number stored in state/obs for item k."""
        return float(status)

    # ----- episode -----
    def seed(self, seed=None):
        """Seed the next reset; later resets continue the RNG."""
        self._rng = random.Random(seed)

    def get_rng_state(self):
        """The start cells' and facings' RNG (and Victim-Rubble's random_free_objects cells)."""
        return {"random": random_state(self._rng)}

    def set_rng_state(self, state):
        self._rng = make_random(state["random"])

    def reset(self):
        cells = self._new_cells()
        occupied = set(cells)
        free = [c for c in self._start_cells if c not in occupied]
        pos = self._rng.sample(free, self.n_agents)
        facing = [self._rng.randrange(4) for _ in range(self.n_agents)]
        self._set(GridState(pos, facing, self._initial_status(), cells, 0, self._zero_events()))
        return self.get_obs(), self.get_state()

    def _initial_status(self):
        return [1 if it.kind == "rubble" else 0 for it in self.items]

    def _zero_events(self):
        return {}

    def _set(self, s):
        self._s = s

    def step(self, actions):
        s = self._s
        acts = [int(a) for a in np.ravel(actions)] if not isinstance(actions, list) else [int(a) for a in actions]
        events = 0
        indiv = [0.0] * self.n_agents
        for i, a in enumerate(acts):
            e, indiv[i] = self._act(s, i, a)
            events += e
        s.t += 1
        success = self._success(s)
        team = self.event_reward * events + (self.success_reward if success else 0.0)
        ended = success or s.t >= self.episode_limit
        if self.step_penalty == "per_step":
            team -= 1.0 / self.episode_limit
        elif (self.step_penalty == "on_success" and success) or (self.step_penalty == "at_end" and ended):
            team -= s.t / self.episode_limit
        info = {"success": int(success), "events": self._event_count(s, success), **s.events}
        if not success and s.t >= self.episode_limit:
            info["episode_limit"] = True
        return self._reward(team, indiv), bool(success), info

    def _act(self, s, i, a):
        """Agent i's action a applied to s in place (agents act one after the other); returns (team events,
        individual reward) it caused."""
        if a == STAY:
            return 0, 0.0
        if a == INTERACT:
            k = self._interact_target(s, i)
            return (0, 0.0) if k is None else self._interact(s, i, k)
        if not 1 <= a <= 4:
            raise ValueError(f"{self.name}: action {a} of agent {i} is not in 0..5")
        dx, dy = MOVES[a - 1]
        x, y = s.pos[i]
        target = (x + dx, y + dy)
        if self._is_wall(s, target):
            return 0, 0.0  # masked; a forced wall move changes nothing
        s.facing[i] = a - 1
        if self._solid_item(s, target) is None and target not in s.pos:
            s.pos[i] = target
            return self._on_enter(s, i)
        return 0, 0.0

    def _reward(self, team, indiv):
        if not self.individual_reward:
            indiv = [0.0] * self.n_agents
        if self.common_reward:  # the team reward once, plus the sum or mean of the individual ones
            return float(team + self.scalarise_reward(indiv))
        return self.scalarise_reward([team + r for r in indiv])

    # ----- geometry -----
    def _item_at(self, s, cell):
        """Index of the item at cell in state s (item cells may differ between episodes: random_free_objects, and
        the oracle and sampler look at states other than the current one)."""
        if s.cells is not self._cells_ref:
            self._cells_ref, self._cell_item = s.cells, {c: k for k, c in enumerate(s.cells)}
        return self._cell_item.get(cell)

    def _is_wall(self, s, cell):
        if cell in self._walls:
            return True
        k = self._item_at(s, cell)
        return k is not None and self.items[k].kind == "door" and not s.status[k]

    def _solid_item(self, s, cell):
        """Index of an item occupying the cell and blocking movement (switch, victim, present rubble)."""
        k = self._item_at(s, cell)
        if k is None:
            return None
        kind = self.items[k].kind
        if kind in ("switch", "victim") or (kind == "rubble" and s.status[k]):
            return k
        return None

    def _interact_target(self, s, i):
        x, y = s.pos[i]
        dirs = [s.facing[i]] if self.interact_mode == "facing" else [s.facing[i], 0, 1, 2, 3]
        for f in dirs:
            k = self._solid_item(s, (x + MOVES[f][0], y + MOVES[f][1]))
            if k is not None and self._can_act(i, k, s):
                return k
        return None

    # ----- pymarl API -----
    def get_avail_agent_actions(self, agent_id):
        return self._avail(self._s, agent_id)

    def _avail(self, s, agent_id):
        """Agent agent_id's action mask (6 ints) in GridState s."""
        x, y = s.pos[agent_id]
        avail = [1, 0, 0, 0, 0, 0]
        for f, (dx, dy) in enumerate(MOVES):
            target = (x + dx, y + dy)
            if self._is_wall(s, target):
                continue
            if self._solid_item(s, target) is not None and s.facing[agent_id] == f:
                continue  # would neither move nor turn
            avail[f + 1] = 1
        avail[INTERACT] = int(self._interact_target(s, agent_id) is not None)
        return avail

    def get_total_actions(self):
        return self.n_actions

    def _agent_feats(self, s, i, norm):
        sx, sy = norm
        x, y = s.pos[i]
        facing = [0.0] * 4
        facing[s.facing[i]] = 1.0
        return [x * sx, y * sy] + facing

    def _item_feats(self, s, norm):
        sx, sy = norm
        out = []
        for k, it in enumerate(self.items):
            x, y = s.cells[k]
            out += [x * sx, y * sy]
            if it.kind != "home":
                out.append(self._status_value(k, s.status[k]))
        return out

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        s = self._s
        role = [0.0] * self.n_agents
        role[agent_id] = 1.0
        feats = self._agent_feats(s, agent_id, self._norm) + role
        for j in range(self.n_agents):
            if j != agent_id:
                feats += self._agent_feats(s, j, self._norm)
        return np.asarray(feats + self._item_feats(s, self._norm), dtype=np.float32)

    def get_obs_size(self):
        return 6 + self.n_agents + 6 * (self.n_agents - 1) + self._items_size()

    def obs_schema(self):
        """get_obs_agent's layout (ego first): the ego's place and facing, its role one-hot (the identity field:
        the agent's colour, and in Victim-Rubble its abilities), the teammates' place and facing, the objects."""
        size = f"divided by ({self.width - 1}, {self.height - 1}) (0..1); {self._COORDS}"
        n = self.n_agents
        colours = ", ".join(f"{self.AGENT_NAMES[i]}{self._role_text(i)}" for i in range(n))
        fields = [Field("ego_position", 0, 2, f"the ego agent's position (x, y) {size}"),
                  Field("ego_facing", 2, 6, "the ego agent's facing direction one-hot (up, down, left, right)"),
                  Field("ego_role", 6, 6 + n, f"one-hot: which agent the ego is ({colours})", identity=True)]
        off = 6 + n
        for k in range(1, n):
            who = "the teammate" if n == 2 else f"teammate {k} (the other agents in index order)"
            fields += [Field(f"teammate_{k}_position", off, off + 2, f"{who}'s position (x, y) {size}"),
                       Field(f"teammate_{k}_facing", off + 2, off + 6, f"{who}'s facing direction one-hot")]
            off += 6
        for f in self.state_schema()[2 * n:-1]:  # the objects: as in the state, cells normalised
            meaning = f"{f.meaning.split(' (x, y)')[0]} (x, y) {size}" if f.name.endswith("_position") else f.meaning
            fields.append(Field(f.name, off, off + f.size, meaning))
            off += f.size
        return fields

    def agent_roles(self):
        return list(self.ROLES)

    def _items_size(self):
        return sum(2 if it.kind == "home" else 3 for it in self.items)

    def get_state(self):
        return self._state_vector(self._s)

    def _state_vector(self, s):
        """The get_state() vector of a GridState (float32 [S])."""
        feats = []
        for i in range(self.n_agents):
            feats += self._agent_feats(s, i, (1.0, 1.0))
        feats += self._item_feats(s, (1.0, 1.0))
        feats.append(s.t / self.episode_limit)
        return np.asarray(feats, dtype=np.float32)

    def get_state_size(self):
        return 6 * self.n_agents + self._items_size() + 1

    def get_stats(self):
        return {}

    def render(self):
        print(self.describe_state())

    def set_state(self, state):
        """Put the env into the situation a get_state() vector describes (for sampled LCA state pairs)."""
        s = self.decode_state(state)
        for i, p in enumerate(s.pos):
            if p in self._walls or not (0 <= p[0] < self.width and 0 <= p[1] < self.height):
                raise ValueError(f"{self.name}.set_state: agent {i} at {p} is outside the floor")
        if len(set(s.pos)) < len(s.pos):
            raise ValueError(f"{self.name}.set_state: two agents share the cell {s.pos}")
        self._set(s)

    def decode_state(self, state):
        """GridState from a state vector (positions rounded to cells)."""
        v = np.asarray(state, dtype=float)
        pos, facing, off = [], [], 0
        for _ in range(self.n_agents):
            pos.append((int(round(v[off])), int(round(v[off + 1]))))
            facing.append(int(np.argmax(v[off + 2:off + 6])))
            off += 6
        cells, status = [], []
        for k, it in enumerate(self.items):
            cells.append((int(round(v[off])), int(round(v[off + 1]))))
            off += 2
            if it.kind == "home":
                status.append(0)
            else:
                status.append(self._status_from_value(k, v[off]))
                off += 1
        t = int(round(v[off] * self.episode_limit))
        return GridState(pos, facing, status, cells, t, self._events_from(status))

    def _status_from_value(self, k, value):
        return int(round(value))

    def _events_from(self, status):
        return {}

    # ----- self-description -----
    _COORDS = ("cell coordinates (x = column, 0 at the left wall, growing right; y = row, 0 at the bottom wall, "
               "growing up)")

    def state_schema(self):
        fields, off = [], 0
        for i in range(self.n_agents):
            who = f"agent {i} ({self.AGENT_NAMES[i]}{self._role_text(i)})"
            fields.append(Field(f"agent_{i}_position", off, off + 2, f"{who} position (x, y), {self._COORDS}"))
            fields.append(Field(f"agent_{i}_facing", off + 2, off + 6,
                                f"{who} facing direction one-hot (up, down, left, right) = direction of its "
                                f"last move or turn"))
            off += 6
        for it in self.items:
            key = it.name.lower()
            fields.append(Field(f"{key}_position", off, off + 2, f"{it.name} position (x, y), {self._COORDS}"))
            off += 2
            if it.kind != "home":
                fields.append(Field(f"{key}_{self._status_name(it)}", off, off + 1, self._status_meaning(it)))
                off += 1
        fields.append(Field("time_fraction", off, off + 1,
                            f"steps taken so far / episode_limit ({self.episode_limit}); 0 at the start"))
        return fields

    def _role_text(self, agent_id):
        return ""

    def action_meanings(self):
        return ["stay still", "move up (y+1), or turn up if an object or the teammate is there",
                "move down (y-1), or turn down if an object or the teammate is there",
                "move left (x-1), or turn left if an object or the teammate is there",
                "move right (x+1), or turn right if an object or the teammate is there",
                self._interact_meaning()]

    def _reward_text(self, events_text, individual_text, optimum):
        penalty = {
            "on_success": f"On success also +{self.success_reward:g} - n/{self.episode_limit} (n = steps taken); "
                          f"a time-limit end gives no extra reward or penalty.",
            "at_end": f"On success also +{self.success_reward:g}; at the episode's end (success or the "
                      f"{self.episode_limit}-step limit) -n/{self.episode_limit} (n = steps taken).",
            "per_step": f"On success also +{self.success_reward:g}; every step -1/{self.episode_limit}.",
            "none": f"On success also +{self.success_reward:g}; no step penalty.",
        }[self.step_penalty]
        text = (f"Team reward (shared by both agents): +{self.event_reward:g} each time {events_text}. {penalty} "
                f"Best team return: {optimum} minus the step penalty.")
        if self.individual_reward:
            how = self.reward_scalarisation
            text += (f" Hand-crafted individual reward: {individual_text}; each agent gets team + its own "
                     f"individual reward" + ("" if not self.common_reward else
                                             f" (as one number: team + {how} of the individual rewards)") + ".")
        return text

    def _where(self, cell):
        name = self._chamber_of.get(cell)
        if name is not None:
            return f"{name} ({cell[0]},{cell[1]})"
        rooms = self._passage_rooms(cell)
        return f"the passage between {rooms[0]} and {rooms[1]} ({cell[0]},{cell[1]})" if len(rooms) == 2 \
            else f"({cell[0]},{cell[1]})"

    def _is_passage(self, cell):
        return cell not in self._walls and cell not in self._chamber_of and len(self._passage_rooms(cell)) == 2

    def _passage_rooms(self, cell):
        x, y = cell
        return sorted({self._chamber_of[n] for n in ((x + dx, y + dy) for dx, dy in MOVES) if n in self._chamber_of})

    def render_map(self, s=None):
        """ASCII map, top row first, with axis labels (one column per cell, wide enough for the x labels)."""
        s = self._s if s is None else s
        grid = {c: "#" for c in self._walls}
        for k, it in enumerate(self.items):
            grid[s.cells[k]] = self._symbol(it, s.status[k])
        for i, p in enumerate(s.pos):
            grid[p] = str(i)
        w = len(str(self.width - 1)) + 1
        lines = []
        for y in range(self.height - 1, -1, -1):
            lines.append(f"y={y:<2}" + "".join(f"{grid.get((x, y), '.'):>{w}}" for x in range(self.width)))
        lines.append("x=  " + "".join(f"{x:>{w}}" for x in range(self.width)))
        return "\n".join(lines)

    def _legend(self):
        agents = ", ".join(f"{i} = agent {i} ({self.AGENT_NAMES[i]})" for i in range(self.n_agents))
        return f"Legend: {agents}, # = wall, . = floor, {self._item_legend()}."

    def describe_state(self, state=None):
        s = self._s if state is None else self.decode_state(state)
        lines = [f"Coordinates: {self._COORDS}.", self.render_map(s), self._legend()]
        for i in range(self.n_agents):
            lines.append(f"Agent {i} ({self.AGENT_NAMES[i]}{self._role_text(i)}): at {self._where(s.pos[i])}, "
                         f"facing {DIR_NAMES[s.facing[i]]}.")
        lines += self._item_lines(s)
        lines.append(f"Step {s.t} of {self.episode_limit}.")
        return "\n".join(lines)

    def describe_agent_view(self, state, agent_id):
        """LCA's agent-specific encoding: the state told from agent_id's side (ego) with its teammate."""
        s = self._s if state is None else self.decode_state(state)
        ego = f"the {self.AGENT_NAMES[agent_id]} (agent {agent_id}){self._role_text(agent_id)}"
        lines = [f"Coordinates: {self._COORDS}.",
                 f"You are the ego agent: {ego}, at {self._where(s.pos[agent_id])}, "
                 f"facing {DIR_NAMES[s.facing[agent_id]]}."]
        for j in range(self.n_agents):
            if j != agent_id:
                lines.append(f"Your teammate: the {self.AGENT_NAMES[j]} (agent {j}){self._role_text(j)}, at "
                             f"{self._where(s.pos[j])}, facing {DIR_NAMES[s.facing[j]]}.")
        lines += self._item_lines(s)
        lines += self._constraint_lines(s)
        lines.append(f"Step {s.t} of {self.episode_limit}.")
        return "\n".join(lines)

    def _constraint_lines(self, s):
        """What the current state still forbids (a locked door, blocked victims), for the agent views."""
        return []

    # ----- shortest paths (layout checks here; the progress oracle in envs/gridworld/oracle.py) -----
    def _bfs(self, s, start, facing, goal, rubble_passable=False, blocked=()):
        """Fewest moves/turns from (start, facing) until goal(cell, facing) holds; teammates ignored unless their
        cells are in `blocked` (cells a move only turns towards, like an object)."""
        if goal(start, facing):
            return 0
        seen = {(start, facing)}
        queue = deque([(start, facing, 0)])
        while queue:
            (x, y), f, d = queue.popleft()
            for nf, (dx, dy) in enumerate(MOVES):
                target = (x + dx, y + dy)
                if self._is_wall(s, target):
                    continue
                k = self._solid_item(s, target)
                stop = target in blocked or (k is not None and not (rubble_passable and self.items[k].kind == "rubble"))
                nxt = ((x, y) if stop else target, nf)
                if nxt in seen:
                    continue
                if goal(*nxt):
                    return d + 1
                seen.add(nxt)
                queue.append((nxt[0], nf, d + 1))
        return math.inf

    def _facing_goal(self, cell):
        if self.interact_mode == "facing":
            return lambda p, f: (p[0] + MOVES[f][0], p[1] + MOVES[f][1]) == cell
        return lambda p, f: abs(p[0] - cell[0]) + abs(p[1] - cell[1]) == 1
