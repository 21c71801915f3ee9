"""Multi-Agent Particle Environments (mpe2 1.1) behind the pymarl API: spread, tag, adversary, world.

Scenarios (`scenario` env arg):
- spread: Cooperative Navigation (simple_spread_v3), N agents cover N landmarks.
- tag: predator-prey (simple_tag_v3); the learner controls the predators ("adversaries"), the
  prey run a fixed policy (`prey_policy`: random | heuristic).
- adversary: physical deception (simple_adversary_v3); the learner controls the good agents,
  the adversary runs a fixed policy (`adversary_policy`: random | heuristic).
- world: CODI's "World" task: simple_tag with 3 slower predators vs 3 faster prey that act
  uniformly at random ("We set the prey as random policies for simplicity", CODI App. D).

How the simulator is driven: the mpe2 scenario builds and resets the world (mpe2's own seeded
RNG); its agents' states stay the source of truth. A pymarl step computes each agent's force
the way mpe2's discrete action does (force = accel x unit direction; accel 5 where mpe2 leaves
it unset) and advances the world once, skipping the AEC machinery: `physics: numpy` (default)
runs mpe2's `World.step` vectorised over entity pairs with the same floating-point operations
in the same order (bit-identical, 2-20x faster, most for large N), `physics: mpe2` calls
`World.step` itself. Observations and rewards are the mpe2 scenario formulas, vectorised; the
tests check positions, velocities, observations and rewards against mpe2's own AEC env.

Observations: each controlled agent's mpe2 observation (identical for all controlled agents of
a scenario, so no padding). Global state: the concatenated observations of the controlled
agents (epymarl's and QLLM's state, e.g. 216 for spread N=6, 48 for tag); mpe2's `state()` is
the same for spread (it also appends the fixed agents' observations in tag/adversary).

Episode end: none of these scenarios has a real terminal; every episode is truncated after
`max_cycles` steps (`info["episode_limit"]=True`).

Deviations: the spread reward is the original MPE one (global distance term plus own
collisions per agent, = 2x mpe2's default local_ratio=0.5 mix; `local_ratio` selects mpe2's mix
instead) without the original's constant -1 per agent per step (openai's simple_spread counts each
agent's collision with itself; mpe2 does not): returns here are 25 x N per episode above the
original's, with the same optimal policy. QLLM's tag and adversary use a pretrained prey /
adversary, we use documented fixed policies. QLLM's table lists an 8-dim adversary-task
observation; mpe2's good agents see 10.
"""
import numpy as np

from envs import episode as ep_text
from envs.description import Field
from envs.multiagentenv import EnvValueError, NoObsHook, NoRewardFromObs, obs_array
from envs.pz_base import PettingZooTeamEnv, reject_unknown
from envs.rng import generator_state, make_generator

SCENARIOS = ("spread", "tag", "adversary", "world")
POLICIES = ("random", "heuristic")

# mpe2 discrete actions: 0 no_action, 1 move_left (-x), 2 move_right (+x), 3 move_down (-y), 4 move_up (+y)
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)
ACTION_MEANINGS = [
    "no_action: apply no force (the agent drifts and slows down)",
    "move_left: push in -x",
    "move_right: push in +x",
    "move_down: push in -y",
    "move_up: push in +y",
]
DEFAULT_ACCEL = 5.0  # mpe2's force scale for agents without their own `accel`

POS = "absolute (x, y) in world units (agents start uniformly in [-1, 1] x [-1, 1], +x right, +y up)"
VEL = "(vx, vy) in world units per second (a step is 0.1 s, so the position moves by 0.1 x velocity)"


def _rel(what, me):
    return f"(dx, dy) = position of {what} minus {me}'s position, world units"


def _listing(kind, n):
    return f"{kind} 0" if n == 1 else f"{kind}s 0..{n - 1} in order"


def _direction_action(d, dead_zone=0.0):
    """The discrete move along the larger component of d (no_action inside the dead zone)."""
    axis = int(abs(d[1]) > abs(d[0]))
    if abs(d[axis]) <= dead_zone:
        return 0
    return 1 + 2 * axis + int(d[axis] > 0)


class _NumpyPhysics:
    """mpe2's `World.step` for silent, noiseless, unscripted agents, vectorised over entity pairs.

    Same operations in the same order as mpe2 (contact force per colliding pair, the forces on an
    agent added in increasing index of the other entity, then damping, acceleration and the speed
    cap), so trajectories are bit-identical to `World.step` (tested); mpe2's pure-Python pair loop
    is O(entities^2) and dominates the step time for large N.
    """

    def __init__(self, world):
        self.world = world
        self.agents = world.agents
        entities = world.entities
        self.n = len(self.agents)
        self.colliders = np.array([i for i, e in enumerate(entities) if e.collide], dtype=np.int64)
        sizes = np.array([e.size for e in entities])[self.colliders]
        self.dist_min = sizes[:, None] + sizes[None, :]
        self.m = int((self.colliders < self.n).sum())  # colliding agents come first (entities = agents + landmarks)
        self.mass = np.array([a.mass for a in self.agents])[:, None]
        self.max_speed = np.array([np.inf if a.max_speed is None else a.max_speed for a in self.agents])
        self.capped = bool(np.isfinite(self.max_speed).any())

    def step(self, P, V, L, U):
        """P, V: agents' positions/velocities (n, 2); L: landmark positions; U: action forces (n, 2).
        Returns the new (P, V) and writes them into the mpe2 agents' states."""
        w = self.world
        force = U.copy()
        if self.m and len(self.colliders) > 1:
            pos = np.concatenate([P, L])[self.colliders]
            delta = pos[: self.m, None] - pos[None]  # [a, b] = p_a - p_b, a over the colliding agents
            dist = np.sqrt(np.sum(np.square(delta), axis=-1))
            dist[np.arange(self.m), np.arange(self.m)] = 1.0  # self-pairs have delta 0, so their force is 0
            k = w.contact_margin
            penetration = np.logaddexp(0, -(dist - self.dist_min[: self.m]) / k) * k
            pair = w.contact_force * delta / dist[..., None] * penetration[..., None]
            rows = self.colliders[: self.m]
            total = force[rows]
            for j in range(len(self.colliders)):  # mpe2's order of addition
                total = pair[:, j] + total
            force[rows] = total
        P = P + V * w.dt
        V = V * (1 - w.damping)
        V = V + (force / self.mass) * w.dt
        if self.capped:
            speed = np.sqrt(np.square(V[:, 0]) + np.square(V[:, 1]))
            over = speed > self.max_speed
            if over.any():
                V[over] = V[over] / np.sqrt(np.square(V[over, 0]) + np.square(V[over, 1]))[:, None] \
                    * self.max_speed[over, None]
        for a, p, v in zip(self.agents, P, V):
            a.state.p_pos[:] = p
            a.state.p_vel[:] = v
        return P, V


def _target_report(dist, obs_valid, actions, step_valid, names, target):
    """Per-agent scorecards and timelines of a chase-the-nearest-target segment (spread: landmarks, world: prey).

    dist [H, n, K]: each agent's distance to each target at each step (rows where obs_valid is False are ignored;
    valid rows come first). The timeline's delta_d at step t is the distance at t minus at t-1 (the effect of the
    action at t-1), as CODI's prompts (App. E) define it; the scorecard's delta_d is the change over the segment."""
    steps = np.flatnonzero(obs_valid)
    near, d = dist.argmin(-1), dist.min(-1)  # [H, n]
    agents, K = [], dist.shape[-1]
    for i in range(dist.shape[1]):
        di = d[steps, i]
        change = np.diff(di)
        counts = np.bincount(near[steps, i], minlength=K)
        favourite = int(counts.argmax())
        timeline = []
        for k, h in enumerate(steps):
            row = {"t": int(h), "action": names[int(actions[h, i])] if step_valid[h] else "none (episode over)",
                   f"nearest_{target}": int(near[h, i]), "distance": float(d[h, i])}
            if k:
                row["delta_d"] = float(change[k - 1])
            timeline.append(row)
        agents.append({"scorecard": {
            "distance_start": float(di[0]), "distance_end": float(di[-1]), "delta_d": float(di[-1] - di[0]),
            "steps_closer": int((change < 0).sum()), "steps_farther": int((change > 0).sum()),
            f"favourite_{target}": favourite, "favourite_fraction": float(counts[favourite] / len(steps))},
            "timeline": timeline})
    shared = [len(set(near[h].tolist())) < near.shape[1] for h in steps]
    return agents, float(np.mean(shared))

class _Scenario:
    """One mpe2 scenario: which world agents the learner controls, their obs, rewards and texts."""
    controlled: list
    fixed: list

    def __init__(self, raw):
        self.raw = raw
        self.world = raw.world
        self.agents = self.world.agents
        self.landmarks = self.world.landmarks
        self.L = None

    def on_reset(self):
        self.L = np.array([lm.state.p_pos for lm in self.landmarks], dtype=np.float64).reshape(-1, 2)

    def info(self):
        return {}


class _Spread(_Scenario):
    def __init__(self, raw, local_ratio):
        super().__init__(raw)
        self.n = len(self.agents)
        self.controlled, self.fixed = list(range(self.n)), []
        self.local_ratio = local_ratio
        self.others = np.array([[k for k in range(self.n) if k != i] for i in range(self.n)], dtype=np.int64)
        sizes = np.array([a.size for a in self.agents])
        self.touch = sizes[:, None] + sizes[None, :]
        self.comm = np.zeros((self.n, 2 * (self.n - 1)))
        self.collisions = 0

    def on_reset(self):
        super().on_reset()
        self.collisions = 0
        self.occupied = 0

    def obs(self, P, V):
        rows = np.arange(self.n)[:, None]
        landmarks = (self.L[None] - P[:, None]).reshape(self.n, -1)
        others = (P[None] - P[:, None])[rows, self.others].reshape(self.n, -1)
        return np.concatenate([V, P, landmarks, others, self.comm], axis=1)

    def terms(self, P, L):
        """What the reward is made of, for agent positions P `[..., n, 2]` and landmarks L `[..., n, 2]` (spread has
        as many landmarks as agents; any leading dims): (closest `[..., n]`: each landmark's distance to its nearest
        agent, contacts `[..., n]`: how many other agents touch each agent)."""
        closest = np.sqrt(np.square(P[..., :, None, :] - L[..., None, :, :]).sum(-1)).min(-2)
        contact = np.sqrt(np.square(P[..., :, None, :] - P[..., None, :, :]).sum(-1)) < self.touch
        contact[..., np.arange(self.n), np.arange(self.n)] = False
        return closest, contact.sum(-1).astype(np.float64)

    def agent_rewards(self, closest, own):
        """Each agent's reward `[..., n]` from `terms`: the team's coverage -sum_l closest, minus its own contacts
        (or mpe2's local_ratio mix of the two)."""
        global_rew = -closest.sum(-1, keepdims=True)
        if self.local_ratio is None:
            return global_rew - own
        return global_rew * (1 - self.local_ratio) - own * self.local_ratio

    def rewards(self, P):
        closest, own = self.terms(P, self.L)
        self.collisions += int(own.sum()) // 2
        self.occupied = int((closest < 0.1).sum())
        return self.agent_rewards(closest, own)

    def info(self):
        return {"collisions": self.collisions, "occupied_landmarks": self.occupied}

    def obs_fields(self, i):
        others = [k for k in range(self.n) if k != i]
        return [("vel", 2, f"agent {i}'s velocity {VEL}"),
                ("pos", 2, f"agent {i}'s position, {POS}"),
                ("landmarks_rel", 2 * self.n,
                 f"for landmarks 0..{self.n - 1} in order, {_rel('the landmark', f'agent {i}')}; "
                 f"pairs dx0, dy0, dx1, dy1, ..."),
                ("others_rel", 2 * (self.n - 1),
                 f"for agents {others} in that order, {_rel('that agent', f'agent {i}')}; pairs (dx, dy)"),
                ("others_comm", 2 * (self.n - 1),
                 f"communication channel of agents {others} (2 values each); always 0 (the agents are silent)")]

    def summary(self, limit):
        return (f"Cooperative Navigation (MPE simple_spread) in a continuous 2D world: {self.n} agents must cover "
                f"{self.n} landmarks (one agent per landmark) without colliding. Agents (radius 0.15, force 5, no "
                f"speed limit, velocity damped by 25% per step) start uniformly in [-1, 1]^2 and so do the "
                f"landmarks, which never move. Every agent observes its own velocity and position, all landmarks "
                f"and all other agents (relative positions). Episodes last {limit} steps.")

    def reward_text(self, team):
        if self.local_ratio is None:
            per_agent = ("r_i = -sum over landmarks l of (distance from l to its closest agent) - c_i, where c_i is "
                         "the number of other agents touching agent i (centre distance < 0.3 = two radii of 0.15). "
                         "This is the original MPE per-agent reward (without its constant -1 per step for the agent "
                         "touching itself), twice mpe2's local_ratio=0.5 mix")
            total = {"sum": f"{self.n} x (the landmark distance term) - 2 x (number of touching pairs)",
                     "mean": "(the landmark distance term) - 2 x (number of touching pairs) / " + str(self.n)}
        else:
            lr = self.local_ratio
            per_agent = (f"r_i = {1 - lr:g} x G - {lr:g} x c_i (mpe2 local_ratio={lr:g}), with G = -sum over landmarks "
                         "of the distance to the closest agent and c_i the number of other agents touching agent i "
                         "(centre distance < 0.3)")
            total = {"sum": "the sum of r_i", "mean": "the mean of r_i"}
        return (f"Every step agent i gets {per_agent}. Team reward = {team} over the agents = {total[team]}. "
                f"Distances are Euclidean in world units; the reward is never positive, 0 only when every landmark "
                f"has an agent exactly on it and nobody touches. No terminal reward.")

    def decode(self, state, size):
        """Absolute positions of agents and landmarks from the state vector."""
        obs = state.reshape(self.n, size)
        P = obs[:, 2:4]
        return {"agents": P, "agent_vel": obs[:, 0:2], "landmarks": P[0] + obs[0, 4:4 + 2 * self.n].reshape(-1, 2)}

    def describe(self, state, size):
        d = self.decode(state, size)
        P, L = d["agents"], d["landmarks"]
        lines = [f"agent {i}: position ({p[0]:.2f}, {p[1]:.2f}), velocity ({v[0]:.2f}, {v[1]:.2f})"
                 for i, (p, v) in enumerate(zip(P, d["agent_vel"]))]
        dist = np.sqrt(np.square(P[:, None] - L[None]).sum(-1))
        for j, lm in enumerate(L):
            k = int(dist[:, j].argmin())
            lines.append(f"landmark {j}: position ({lm[0]:.2f}, {lm[1]:.2f}); closest agent {k} at "
                         f"{dist[k, j]:.2f}")
        dist_aa = np.sqrt(np.square(P[:, None] - P[None]).sum(-1))
        pairs = [(i, k) for i in range(self.n) for k in range(i + 1, self.n) if dist_aa[i, k] < self.touch[i, k]]
        lines.append(f"sum of closest-agent distances: {dist.min(0).sum():.2f}; touching pairs: {pairs or 'none'}")
        return "\n".join(lines)


    def episode_lines(self, ep, size, max_steps):
        """Spread's features (MisoDICE B.2.2): landmark coverage, distances and collisions over the episode."""
        frames = [self.decode(state, size) for state in ep.states]
        P = np.stack([f["agents"] for f in frames])  # [L+1, n, 2]
        L = frames[0]["landmarks"]
        dist = np.sqrt(np.square(P[:, :, None] - L[None, None]).sum(-1))  # [L+1, agents, landmarks]
        closest = dist.min(1)  # [L+1, landmarks]
        total = closest.sum(1)
        covered = (closest < 0.1).sum(1)
        dist_aa = np.sqrt(np.square(P[:, :, None] - P[:, None]).sum(-1))
        iu = np.triu_indices(self.n, 1)
        touching = (dist_aa[:, iu[0], iu[1]] < self.touch[iu]).sum(1)[1:]  # after each transition
        travelled = np.sqrt(np.square(np.diff(P, axis=0)).sum(-1)).sum(0)
        end = dist[-1]
        lines = [f"Landmarks covered (an agent within 0.1) at the end: {covered[-1]} of {self.n} (start {covered[0]}, "
                 f"most at once {covered.max()}).",
                 f"Sum over landmarks of the distance to the closest agent: start {total[0]:.2f}, end {total[-1]:.2f}, "
                 f"mean over the episode {total[1:].mean():.2f}, best {total.min():.2f}.",
                 f"Collisions: {int(touching.sum())} touching agent pairs summed over the steps, in "
                 f"{int((touching > 0).sum())} of {ep.length} steps; touching at the end: {int(touching[-1])} pairs.",
                 "Agents, start -> end:"]
        for i in range(self.n):
            j = int(end[i].argmin())
            lines.append(f"- agent {i}: ({P[0, i, 0]:.2f}, {P[0, i, 1]:.2f}) -> "
                         f"({P[-1, i, 0]:.2f}, {P[-1, i, 1]:.2f}), travelled {travelled[i]:.2f}; "
                         f"nearest landmark at the end: {j} at {end[i, j]:.2f}")
        steps = ep_text.sample_steps(ep.length, max_steps)
        timeline = [f"Timeline ({len(steps)} of {ep.length + 1} steps; covered landmarks, distance sum):"
                    ] if steps else []
        timeline += [f"- step {t}: {covered[t]} covered, distance sum {total[t]:.2f}" for t in steps]
        return ["\n".join(lines), "\n".join(timeline)]

    def segment_report(self, obs, actions, obs_valid, step_valid, names):
        """agent_segment_report for spread, from the agents' own observations [H, n, O] (landmarks_rel,
        others_rel): distance to the nearest landmark, its change, favourite landmark, collision steps."""
        n = self.n
        dist = np.sqrt(np.square(obs[:, :, 4:4 + 2 * n].reshape(len(obs), n, n, 2)).sum(-1))  # [H, agent, landmark]
        others = np.sqrt(np.square(obs[:, :, 4 + 2 * n:4 + 2 * n + 2 * (n - 1)].reshape(len(obs), n, n - 1, 2)).sum(-1))
        touching = others < self.touch[np.arange(n)[:, None], self.others][None]  # [H, agent, other]
        agents, shared = _target_report(dist, obs_valid, actions, step_valid, names, "landmark")
        steps = np.flatnonzero(obs_valid)
        for i, a in enumerate(agents):
            a["scorecard"]["collision_steps"] = int(touching[steps, i].any(-1).sum())
        cover = dist[steps].min(1).sum(-1)  # the reward's distance term: landmarks' closest-agent distances summed
        team = {"shared_nearest_landmark_fraction": shared, "landmark_distance_sum_start": float(cover[0]),
                "landmark_distance_sum_end": float(cover[-1]),
                "collision_steps": int(touching[steps].any(-1).any(-1).sum())}
        legend = (
            "distance = the agent's distance (world units) to its nearest landmark at that step; delta_d in the "
            "timeline = distance now minus at the previous step (negative: it moved closer); scorecard delta_d = "
            "distance_end - distance_start over the segment (negative: closer); steps_closer / steps_farther = steps "
            "whose delta_d is negative / positive; favourite_landmark = the landmark most often nearest to it, "
            "favourite_fraction = how often; collision_steps = steps at which it touches another agent. Team: "
            "shared_nearest_landmark_fraction = fraction of steps at which two or more agents have the same nearest "
            "landmark; landmark_distance_sum = sum over landmarks of the distance to the closest agent (the reward's "
            "distance term: lower is better).")
        return {"legend": legend, "agents": agents, "team": team}

class _Tag(_Scenario):
    """simple_tag: adversaries (predators) are world agents 0..na-1, prey follow."""

    def __init__(self, raw, prey_policy, name):
        super().__init__(raw)
        self.name = name
        self.na = sum(a.adversary for a in self.agents)
        self.ng = len(self.agents) - self.na
        self.nl = len(self.landmarks)
        assert not any(lm.boundary for lm in self.landmarks), "mpe2 tag with boundary landmarks is not supported"
        self.controlled = list(range(self.na))
        self.fixed = list(range(self.na, self.na + self.ng))
        self.prey_policy = prey_policy
        n_all = len(self.agents)
        self.others = np.array([[k for k in range(n_all) if k != i] for i in range(self.na)], dtype=np.int64)
        sizes = np.array([a.size for a in self.agents])
        self.touch = sizes[self.na:, None] + sizes[None, :self.na]  # (prey, predator)
        self.pred, self.prey = self.agents[0], self.agents[self.na] if self.ng else None
        self.tags = 0

    def on_reset(self):
        super().on_reset()
        self.tags = 0

    def obs(self, P, V):
        na = self.na
        rows = np.arange(na)[:, None]
        Pc = P[:na]
        obstacles = (self.L[None] - Pc[:, None]).reshape(na, -1)
        others = (P[None] - Pc[:, None])[rows, self.others].reshape(na, -1)
        prey_vel = np.broadcast_to(V[na:].reshape(1, -1), (na, 2 * self.ng))
        return np.concatenate([V[:na], Pc, obstacles, others, prey_vel], axis=1)

    def rewards(self, P):
        dist = np.sqrt(np.square(P[self.na:, None] - P[None, :self.na]).sum(-1))  # (prey, predator)
        contacts = int((dist < self.touch).sum())
        self.tags += contacts
        return np.full(self.na, 10.0 * contacts)

    def info(self):
        return {"tags": self.tags}

    def fixed_actions(self, rng, P, V):
        if self.prey_policy == "random":
            return rng.integers(0, 5, size=self.ng).tolist()
        return [self.flee(P[k], P[:self.na]) for k in self.fixed]

    @staticmethod
    def flee(p, predators):
        """Heuristic prey: the move that best points away from the nearest predator, avoiding moves that
        push further out once |x| or |y| > 0.8 (the prey's boundary penalty starts at 0.9)."""
        away = p - predators[np.argmin(np.square(predators - p).sum(1))]
        away = away / (np.sqrt(np.square(away).sum()) + 1e-9)
        moves = MOVES[1:]
        outward = ((moves * np.sign(p)) > 0) & (np.abs(p) > 0.8)
        score = moves @ away - 2.0 * outward.any(1)
        return 1 + int(np.argmax(score))

    def obs_fields(self, i):
        others = [f"predator {k}" for k in range(self.na) if k != i] + [f"prey {k}" for k in range(self.ng)]
        prey = "prey 0" if self.ng == 1 else f"prey 0..{self.ng - 1} in order"
        return [("vel", 2, f"predator {i}'s velocity {VEL}"),
                ("pos", 2, f"predator {i}'s position, {POS}"),
                ("obstacles_rel", 2 * self.nl,
                 f"for {_listing('obstacle', self.nl)} (static, radius 0.2), "
                 f"{_rel('the obstacle', f'predator {i}')}; pairs (dx, dy)"),
                ("others_rel", 2 * (self.na + self.ng - 1),
                 f"for {', '.join(others)} in that order, {_rel('that agent', f'predator {i}')}; pairs (dx, dy)"),
                ("prey_vel", 2 * self.ng, f"velocity of {prey}, {VEL}")]

    def policy_text(self):
        if self.prey_policy == "random":
            return "uniformly random actions"
        return ("a fixed flee heuristic (each step: the move pointing most directly away from its nearest predator, "
                "avoiding moves further out once a coordinate exceeds 0.8 in absolute value)")

    def summary(self, limit):
        head = ("World (CODI's predator-prey task, built on MPE simple_tag)" if self.name == "world"
                else "Predator-prey (MPE simple_tag)")
        return (f"{head} in a continuous 2D world: the learner controls {self.na} slower predators (radius 0.075, "
                f"force 3, max speed 1.0) that must catch {self.ng} faster prey (radius 0.05, force 4, max speed 1.3) "
                f"by touching them; the prey follow {self.policy_text()}. {self.nl} static obstacles (radius 0.2, "
                f"placed uniformly in [-0.9, 0.9]^2) block movement. Agents start uniformly in [-1, 1]^2; velocity "
                f"is damped by 25% per step. Each predator observes its own velocity and position and the relative "
                f"positions of obstacles and all other agents, plus the prey's velocities. "
                f"Episodes last {limit} steps (no terminal).")

    def reward_text(self, team):
        per = f"{10 * self.na} per contact" if team == "sum" else "10 per contact"
        return (f"Every step each predator gets +10 for every (prey, predator) pair in contact (centre distance < "
                f"0.125 = 0.05 + 0.075), counting all predators' contacts, so all predators get the same reward. "
                f"Team reward = {team} over the {self.na} predators = {per}. No distance shaping, no penalties. "
                f"(The fixed prey's own reward, -10 per contact minus a per-axis boundary penalty of 0 for |x| < 0.9, "
                f"10(|x| - 0.9) up to 1 and min(exp(2|x| - 2), 10) beyond, does not enter the team reward.)")

    def decode(self, state, size):
        obs = state.reshape(self.na, size)
        P = obs[:, 2:4]
        base = 4 + 2 * self.nl
        others = obs[0, base: base + 2 * (self.na + self.ng - 1)].reshape(-1, 2) + P[0]
        return {"predators": P, "predator_vel": obs[:, 0:2],
                "obstacles": P[0] + obs[0, 4:base].reshape(-1, 2),
                "prey": others[self.na - 1:], "prey_vel": obs[0, size - 2 * self.ng:].reshape(-1, 2)}

    def describe(self, state, size):
        d = self.decode(state, size)
        lines = [f"predator {i}: position ({p[0]:.2f}, {p[1]:.2f}), velocity ({v[0]:.2f}, {v[1]:.2f})"
                 for i, (p, v) in enumerate(zip(d["predators"], d["predator_vel"]))]
        dist = np.sqrt(np.square(d["prey"][:, None] - d["predators"][None]).sum(-1))
        for k, (p, v) in enumerate(zip(d["prey"], d["prey_vel"])):
            i = int(dist[k].argmin())
            caught = " (caught)" if dist[k, i] < self.touch[k, i] else ""
            lines.append(f"prey {k}: position ({p[0]:.2f}, {p[1]:.2f}), velocity ({v[0]:.2f}, {v[1]:.2f}); "
                         f"nearest predator {i} at {dist[k, i]:.2f}{caught}")
        lines += [f"obstacle {j}: position ({o[0]:.2f}, {o[1]:.2f})" for j, o in enumerate(d["obstacles"])]
        return "\n".join(lines)

    def segment_report(self, obs, actions, obs_valid, step_valid, names):
        """agent_segment_report for tag/world, from the predators' own observations [H, na, O] (the prey's
        relative positions in others_rel): distance to the nearest prey, its change, favourite prey, contacts."""
        na, ng = self.na, self.ng
        start = 4 + 2 * self.nl + 2 * (na - 1)  # others_rel lists the other predators first, then the prey
        dist = np.sqrt(np.square(obs[:, :, start:start + 2 * ng].reshape(len(obs), na, ng, 2)).sum(-1))
        contact = dist < self.touch.T[None]  # [H, predator, prey]
        agents, shared = _target_report(dist, obs_valid, actions, step_valid, names, "prey")
        steps = np.flatnonzero(obs_valid)
        for i, a in enumerate(agents):
            a["scorecard"]["prey_contact_steps"] = int(contact[steps, i].any(-1).sum())
        team = {"shared_nearest_prey_fraction": shared, "prey_contacts": int(contact[steps].sum()),
                "steps_with_two_predators_on_a_prey": int((contact[steps].sum(1) >= 2).any(-1).sum())}
        legend = (
            "distance = the predator's distance (world units) to its nearest prey at that step; delta_d in the "
            "timeline = distance now minus at the previous step (negative: it closed in); scorecard delta_d = "
            "distance_end - distance_start over the segment (negative: closer); steps_closer / steps_farther = steps "
            "whose delta_d is negative / positive; favourite_prey = the prey most often nearest to it, "
            "favourite_fraction = how often; prey_contact_steps = steps at which it touches a prey (a catch, "
            "rewarded). Team: shared_nearest_prey_fraction = fraction of steps at which two or more predators have "
            "the same nearest prey; prey_contacts = (predator, prey) contacts summed over the steps.")
        return {"legend": legend, "agents": agents, "team": team}

class _Adversary(_Scenario):
    """simple_adversary: world agent 0 is the adversary, 1..N the good agents the learner controls."""

    def __init__(self, raw, adversary_policy):
        super().__init__(raw)
        self.n = len(self.agents) - 1
        self.controlled, self.fixed = list(range(1, self.n + 1)), [0]
        self.policy = adversary_policy
        n_all = self.n + 1
        self.others = np.array([[k for k in range(n_all) if k != g] for g in self.controlled], dtype=np.int64)
        self.goal = 0
        self.dist_good = self.dist_adv = 0.0

    def on_reset(self):
        super().on_reset()
        goal = self.agents[0].goal_a
        self.goal = next(j for j, lm in enumerate(self.landmarks) if lm is goal)

    def obs(self, P, V):
        n = self.n
        rows = np.arange(n)[:, None]
        G = P[1:]
        goal = self.L[self.goal] - G
        landmarks = (self.L[None] - G[:, None]).reshape(n, -1)
        others = (P[None] - G[:, None])[rows, self.others].reshape(n, -1)
        return np.concatenate([goal, landmarks, others], axis=1)

    def rewards(self, P):
        d = np.sqrt(np.square(P - self.L[self.goal]).sum(1))
        self.dist_adv, self.dist_good = float(d[0]), float(d[1:].min())
        return np.full(self.n, self.dist_adv - self.dist_good)

    def info(self):
        return {"good_goal_dist": self.dist_good, "adversary_goal_dist": self.dist_adv}

    def fixed_actions(self, rng, P, V):
        if self.policy == "random":
            return [int(rng.integers(0, 5))]
        return [self.chase(P[0], V[0], P[1:], self.L)]

    @staticmethod
    def chase(p, v, good, landmarks):
        """Heuristic adversary (it does not know the goal): guess the landmark that some good agent is closest
        to and steer at it, aiming where its momentum will carry it (0.4 x velocity ahead) to avoid overshoot."""
        gap = np.sqrt(np.square(landmarks[:, None] - good[None]).sum(-1)).min(1)
        target = landmarks[int(np.argmin(gap))]
        return _direction_action(target - (p + 0.4 * v), dead_zone=0.05)

    def obs_fields(self, i):
        others = ["the adversary"] + [f"agent {k}" for k in range(self.n) if k != i]
        return [("goal_rel", 2, f"{_rel('the goal (target) landmark', f'agent {i}')}; only the good agents know it"),
                ("landmarks_rel", 2 * self.n,
                 f"for landmarks 0..{self.n - 1} in order (one of them is the goal), "
                 f"{_rel('the landmark', f'agent {i}')}; pairs (dx, dy)"),
                ("others_rel", 2 * self.n, f"for {', '.join(others)} in that order, "
                                           f"{_rel('that agent', f'agent {i}')}; pairs (dx, dy)")]

    def policy_text(self):
        if self.policy == "random":
            return "uniformly random actions"
        return ("a fixed heuristic: it guesses that the goal is the landmark some good agent is closest to and "
                "steers there, braking for its momentum")

    def summary(self, limit):
        return (f"Physical deception (MPE simple_adversary) in a continuous 2D world: the learner controls {self.n} "
                f"good agents; one adversary follows {self.policy_text()}. There are {self.n} landmarks, one of "
                f"them the goal. The good agents know which one (the adversary does not); the team wants some good "
                f"agent at the goal while keeping the adversary away from it, e.g. by covering every landmark so "
                f"the adversary cannot tell which is the goal. Agents (radius 0.15, force 5, no collisions) and "
                f"landmarks start uniformly in [-1, 1]^2; velocity is damped by 25% per step. "
                f"Episodes last {limit} steps (no terminal).")

    def reward_text(self, team):
        scale = f"{self.n} x " if team == "sum" else ""
        return (f"Every step every good agent gets r = (distance from the adversary to the goal) - (distance from "
                f"the goal to the closest good agent), Euclidean in world units, the same for all good agents. "
                f"Team reward = {team} over the {self.n} good agents = {scale}r. No terminal reward.")

    def decode(self, state, size):
        """Positions relative to good agent 0 (the good agents' observations hold no absolute position)."""
        obs0 = state.reshape(self.n, size)[0]
        base = 2 + 2 * self.n
        return {"goal": obs0[0:2], "landmarks": obs0[2:base].reshape(-1, 2), "adversary": obs0[base:base + 2],
                "good": np.vstack([np.zeros(2), obs0[base + 2:base + 2 * self.n].reshape(-1, 2)])}

    def describe(self, state, size):
        d = self.decode(state, size)
        lines = ["positions relative to agent 0 (the observations hold no absolute positions):"]
        lines += [f"agent {k}: ({p[0]:.2f}, {p[1]:.2f}); distance to goal "
                  f"{np.sqrt(np.square(p - d['goal']).sum()):.2f}" for k, p in enumerate(d["good"])]
        a = d["adversary"]
        gap = np.sqrt(np.square(a - d["goal"]).sum())
        lines.append(f"adversary: ({a[0]:.2f}, {a[1]:.2f}); distance to goal {gap:.2f}")
        for j, lm in enumerate(d["landmarks"]):
            tag = " (goal)" if np.allclose(lm, d["goal"]) else ""
            lines.append(f"landmark {j}{tag}: ({lm[0]:.2f}, {lm[1]:.2f})")
        return "\n".join(lines)


def _check_policy(kind, value):
    if value not in POLICIES:
        raise EnvValueError(f"mpe: {kind} must be one of {POLICIES}, got {value!r}")
    return value


def _build(scenario, N, max_cycles, num_good, num_adversaries, num_obstacles, prey_policy, adversary_policy,
           local_ratio):
    """The mpe2 raw env and our scenario wrapper; rejects options that do not apply to the scenario."""
    given = {"N": N, "num_good": num_good, "num_adversaries": num_adversaries, "num_obstacles": num_obstacles,
             "prey_policy": prey_policy, "adversary_policy": adversary_policy, "local_ratio": local_ratio}
    allowed = {"spread": {"N", "local_ratio"}, "adversary": {"N", "adversary_policy"},
               "tag": {"num_good", "num_adversaries", "num_obstacles", "prey_policy"}}
    allowed["world"] = allowed["tag"]
    if scenario not in SCENARIOS:
        raise EnvValueError(f"mpe: unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    wrong = sorted(k for k, v in given.items() if v is not None and k not in allowed[scenario])
    if wrong:
        raise EnvValueError(f"mpe: env_args {wrong} do not apply to scenario '{scenario}' "
                         f"(its options: {sorted(allowed[scenario])})")
    # mpe2 counts its own cycles; ours end the episode first, so give it room to never truncate
    cycles = max_cycles + 1
    if scenario == "spread":
        from mpe2 import simple_spread_v3
        N = 3 if N is None else N
        if int(N) < 2:
            raise EnvValueError(f"mpe: spread needs N >= 2 agents, got {N!r}")
        if local_ratio is not None and not 0.0 <= float(local_ratio) <= 1.0:
            raise EnvValueError(f"mpe: local_ratio must be null or in [0, 1], got {local_ratio!r}")
        raw = simple_spread_v3.raw_env(N=int(N), max_cycles=cycles, continuous_actions=False)
        return raw, _Spread(raw, None if local_ratio is None else float(local_ratio))
    if scenario == "adversary":
        from mpe2 import simple_adversary_v3
        N = 2 if N is None else N
        if int(N) < 1:
            raise EnvValueError(f"mpe: adversary needs N >= 1 good agents, got {N!r}")
        raw = simple_adversary_v3.raw_env(N=int(N), max_cycles=cycles, continuous_actions=False)
        return raw, _Adversary(raw, _check_policy("adversary_policy", adversary_policy or "heuristic"))
    from mpe2 import simple_tag_v3
    world = scenario == "world"
    defaults = (3, 3, 2, "random") if world else (1, 3, 2, "heuristic")
    num_good, num_adversaries, num_obstacles, prey_policy = (
        d if v is None else v for v, d in zip((num_good, num_adversaries, num_obstacles, prey_policy), defaults))
    if int(num_good) < 1 or int(num_adversaries) < 1 or int(num_obstacles) < 0:
        raise EnvValueError(f"mpe: {scenario} needs num_good >= 1, num_adversaries >= 1, num_obstacles >= 0; got "
                         f"{num_good}, {num_adversaries}, {num_obstacles}")
    raw = simple_tag_v3.raw_env(num_good=int(num_good), num_adversaries=int(num_adversaries),
                                num_obstacles=int(num_obstacles), max_cycles=cycles, continuous_actions=False)
    return raw, _Tag(raw, _check_policy("prey_policy", prey_policy), scenario)


class MPEEnv(PettingZooTeamEnv):
    family = "mpe"
    VALID_ARGS = ("scenario", "N", "max_cycles", "num_good", "num_adversaries", "num_obstacles", "prey_policy",
                  "adversary_policy", "local_ratio", "physics", "seed", "common_reward", "reward_scalarisation")

    def __init__(self, scenario="spread", N=None, max_cycles=25, num_good=None, num_adversaries=None,
                 num_obstacles=None, prey_policy=None, adversary_policy=None, local_ratio=None, physics="numpy",
                 seed=None, common_reward=True, reward_scalarisation="sum", **kwargs):
        reject_unknown("mpe", kwargs, self.VALID_ARGS)
        if physics not in ("numpy", "mpe2"):
            raise EnvValueError(f"mpe: physics must be 'numpy' (vectorised, bit-identical) or 'mpe2', got {physics!r}")
        self.scenario = scenario
        self._raw, self._sc = _build(scenario, N, max_cycles, num_good, num_adversaries, num_obstacles,
                                     prey_policy, adversary_policy, local_ratio)
        self._setup(len(self._sc.controlled), len(MOVES), max_cycles, seed, common_reward, reward_scalarisation)
        self._world = self._raw.world
        self._agents = self._world.agents
        for agent in self._agents:
            # our step reproduces mpe2's discrete action for silent, movable, noiseless agents only
            if not (agent.movable and agent.silent) or agent.u_noise or agent.action_callback is not None:
                raise ValueError(f"mpe: agent {agent.name} is not a silent, movable, noiseless agent")
            agent.action.c = np.zeros(self._world.dim_c)
        self._forces = np.stack([MOVES * (DEFAULT_ACCEL if a.accel is None else a.accel) for a in self._agents])
        self._physics = _NumpyPhysics(self._world) if physics == "numpy" else None
        self._everyone = np.arange(len(self._agents))
        self._joint = np.zeros(len(self._agents), dtype=np.int64)
        self._rng = np.random.default_rng()  # the fixed policies' RNG; reseeded with the env seed
        self._read_world()

    # --- episode ---
    def reset(self):
        seed = self._take_seed()
        self._raw.reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        self._read_world()
        return self.get_obs(), self.get_state()

    def get_rng_state(self):
        """The world's RNG (placement) and the fixed policies' (tag, adversary, world: the prey's or adversary's
        random actions)."""
        return {**super().get_rng_state(), "policies": generator_state(self._rng)}

    def set_rng_state(self, state):
        super().set_rng_state(state)
        self._rng = make_generator(state["policies"])

    def step(self, actions):
        acts = self._int_actions(actions)
        sc, joint = self._sc, self._joint
        self._read_agents()  # from the mpe2 objects, the single source of truth (so they may be edited)
        self.last_fixed_actions = sc.fixed_actions(self._rng, self._P, self._V) if sc.fixed else []
        joint[sc.controlled] = acts
        joint[sc.fixed] = self.last_fixed_actions
        forces = self._forces[self._everyone, joint]
        if self._physics is not None:
            self._P, self._V = self._physics.step(self._P, self._V, sc.L, forces)
        else:
            for agent, u in zip(self._agents, forces):
                agent.action.u = u
            self._world.step()
            self._read_agents()
        rewards = sc.rewards(self._P)
        self._set_obs()
        terminated, info = self._end_step(False, sc.info())
        return self.scalarise_reward(rewards), terminated, info

    def _read_world(self):
        self._sc.on_reset()
        self._read_agents()
        self._set_obs()

    def _read_agents(self):
        self._P = np.array([a.state.p_pos for a in self._agents], dtype=np.float64)
        self._V = np.array([a.state.p_vel for a in self._agents], dtype=np.float64)

    def _set_obs(self):
        self._obs = self._sc.obs(self._P, self._V).astype(np.float32)
        self._state = self._obs.reshape(-1)

    # --- obs hooks (CODI stitching): exact for every scenario ---
    def state_from_obs(self, obs, actions=None):
        """`obs [..., n, O]` -> `[..., n * O]`: the state is the controlled agents' observations concatenated
        (_set_obs), so any leading dims work and `actions` are not needed."""
        obs = obs_array(self, obs, "state_from_obs")
        return obs.reshape(*obs.shape[:-2], -1).astype(np.float32)

    def avail_actions_from_obs(self, obs):
        """Every move is always available: ones `[..., n, 5]`."""
        obs = obs_array(self, obs, "avail_actions_from_obs")
        return np.ones((*obs.shape[:-1], self.n_actions), dtype=np.int64)

    def terminal_from_obs(self, obs):
        """No MPE scenario has a real terminal (episodes are truncated): all false `[...]`."""
        return np.zeros(obs_array(self, obs, "terminal_from_obs").shape[:-2], dtype=bool)

    def positions_from_obs(self, obs):
        """Spread: each agent's own position `[..., n, 2]` (obs[2:4], _Spread.obs)."""
        if not isinstance(self._sc, _Spread):
            raise NoObsHook(self, "positions_from_obs", "only spread's observation layout is read here", "MPE spread")
        return obs_array(self, obs, "positions_from_obs")[..., 2:4]

    def landmarks_from_obs(self, obs):
        """Spread: where each agent's observation places the landmarks, `[..., n (viewer), n (landmark), 2]`: its
        position at obs[2:4] plus its offsets at obs[4:4 + 2n] (_Spread.obs). Real observations agree across viewers."""
        if not isinstance(self._sc, _Spread):
            raise NoRewardFromObs(self, "only spread's reward is computed from the observations here")
        obs = obs_array(self, obs, "landmarks_from_obs")
        n = self.n_agents
        return self.positions_from_obs(obs)[..., None, :] + obs[..., 4:4 + 2 * n].reshape(*obs.shape[:-1], n, 2)

    def view_gap_from_obs(self, obs):
        """Spread: `[...]`, the largest distance between where an agent's observation puts a landmark and where agent
        0's puts it (the landmarks the reward hooks use), or puts a teammate (its offset) and where that teammate's
        own position is. 0 up to float32 on real observations."""
        if not isinstance(self._sc, _Spread):
            raise NoObsHook(self, "view_gap_from_obs", "only spread's observation layout is checked here",
                            "MPE spread")
        obs = obs_array(self, obs, "view_gap_from_obs")
        n, P = self.n_agents, self.positions_from_obs(obs)
        L = self.landmarks_from_obs(obs)  # [..., viewer, landmark, 2]
        landmark_gap = np.sqrt(np.square(L - L[..., :1, :, :]).sum(-1)).max((-2, -1))
        seen = P[..., None, :] + obs[..., 4 + 2 * n:4 + 2 * n + 2 * (n - 1)].reshape(*obs.shape[:-1], n - 1, 2)
        true = P[..., self._sc.others, :]  # [..., viewer, other, 2]: the others in _Spread.obs's order
        teammate_gap = np.sqrt(np.square(seen - true).sum(-1)).max((-2, -1))
        return np.maximum(landmark_gap, teammate_gap)

    def view_projection(self):
        """Spread: M `[n*O, n*O]` (new joint obs = M @ old, agents one after another) that places each landmark where
        the agents put it on average and each teammate at its own position: agent i's landmark offsets become
        mean_j(p_j + offset_jk) - p_i and its teammate offsets p_j - p_i. Velocities, positions and comm are kept."""
        if not isinstance(self._sc, _Spread):
            raise NoObsHook(self, "view_projection", "only spread's observation layout is projected here", "MPE spread")
        n, O = self.n_agents, self.get_obs_size()
        M = np.eye(n * O)
        for i in range(n):
            pos_i = i * O + np.arange(2, 4)
            for k in range(n):  # landmark k's offset (x, y) in agent i's view
                rows = i * O + 4 + 2 * k + np.arange(2)
                M[rows] = 0.0
                for j in range(n):
                    M[rows, j * O + np.arange(2, 4)] += 1.0 / n
                    M[rows, j * O + 4 + 2 * k + np.arange(2)] += 1.0 / n
                M[rows, pos_i] -= 1.0
            for m, j in enumerate(self._sc.others[i]):  # teammate j, in _Spread.obs's order
                rows = i * O + 4 + 2 * n + 2 * m + np.arange(2)
                M[rows] = 0.0
                M[rows, j * O + np.arange(2, 4)] += 1.0
                M[rows, pos_i] -= 1.0
        return M

    def spread_terms_from_obs(self, obs):
        """Spread's reward terms (`_Spread.terms`: closest `[..., n]`, contacts `[..., n]`) from observations
        `[..., n, O]`: the agents' positions, the landmarks as agent 0's observation places them."""
        L = self.landmarks_from_obs(obs)[..., 0, :, :]
        return self._sc.terms(self.positions_from_obs(np.asarray(obs, dtype=np.float64)), L)

    def reward_from_obs(self, obs):
        """Spread: the reward `step` returns on arriving at observations `[..., n, O]`: `[...]` with common_reward
        (sum or mean per reward_scalarisation), else `[..., n]`; float64, exact up to float32 observations."""
        closest, own = self.spread_terms_from_obs(obs)
        rewards = self._sc.agent_rewards(closest, own)
        if not self.common_reward:
            return rewards
        return rewards.mean(-1) if self.reward_scalarisation == "mean" else rewards.sum(-1)

    # --- self-description ---
    def task_summary(self):
        return self._sc.summary(self.episode_limit)

    def state_schema(self):
        size = self.get_obs_size()
        who = "predator" if isinstance(self._sc, _Tag) else "agent"
        fields = []
        for i in range(self.n_agents):
            start = i * size
            for name, width, meaning in self._sc.obs_fields(i):
                if width:  # e.g. no obstacles
                    fields.append(Field(f"{who}_{i}.{name}", start, start + width, meaning))
                start += width
        return fields

    def action_meanings(self):
        return list(ACTION_MEANINGS)

    def reward_description(self):
        return self._sc.reward_text(self.reward_scalarisation)

    def episode_sections(self, ep, max_steps):
        """Spread: coverage, distances, collisions (its own features); the other scenarios: the generic text."""
        if not isinstance(self._sc, _Spread):
            return super().episode_sections(ep, max_steps)
        own = self._sc.episode_lines(ep, self.get_obs_size(), max_steps)
        return [ep_text.ending(self, ep), own[0], ep_text.action_counts(self, ep), own[1]]

    def describe_state(self, state=None):
        """Positions of every entity (reconstructed from the state) and the quantities the reward uses."""
        state = self.get_state() if state is None else np.asarray(state, dtype=np.float64)
        return self._sc.describe(np.asarray(state, dtype=np.float64), self.get_obs_size())

    def agent_segment_report(self, obs, actions, rewards, obs_valid, step_valid):
        """Per-agent scorecards and timelines of a segment for CODI's agent-quality prompt (MultiAgentEnv's
        contract), computed from the observations: spread towards landmarks, tag/world towards prey."""
        if not hasattr(self._sc, "segment_report"):
            raise NotImplementedError(f"agent_segment_report: MPEEnv (scenario '{self.scenario}') has no segment "
                                      f"report; spread, tag and world have one")
        obs, actions, obs_valid, step_valid = self.segment_arrays(obs, actions, obs_valid, step_valid)
        names = [ep_text.short_meaning(m) for m in ACTION_MEANINGS]
        return self._sc.segment_report(obs, actions, obs_valid, step_valid, names)

    def close(self):
        # mpe2's close() calls pygame.quit(), which would tear pygame down for every other env in the process;
        # nothing was opened (no rendering), so there is nothing to release
        pass
