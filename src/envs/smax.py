"""SMAX: JaxMARL's JAX re-implementation of SMAC unit micromanagement (jaxmarl 0.2, an optional extra).

This is NOT StarCraft II: SMAX re-implements SMAC-style battles (unit types, health, weapon
cooldowns, attack/sight ranges, 0.5 s of game time per step) in a small JAX simulator, with
JaxMARL's scripted `HeuristicEnemySMAX` opponent standing in for SMAC's built-in AI. Maps are
SMAC names that SMAX defines (3m, 2s3z, 8m, 25m, 3s5z, 5m_vs_6m, 10m_vs_11m, 27m_vs_30m,
3s5z_vs_3s6z, 3s_vs_5z, 6h_vs_8z, and the SMACv2-style smacv2_{5,10,20}_units); for real SMAC
use --env-config=sc2 (envs/smac.py).

pymarl view (the agents are SMAX's allies; enemies are scripted):
- actions in SMAC's layout: 0 no-op (dead agents only), 1 stop, 2 north (+y), 3 south (-y),
  4 east (+x), 5 west (-x), 6 + j attack enemy j (in range and alive). SMAX's own order is
  (north, east, south, west, stop, attack...) with stop always allowed; it is remapped here.
- obs: SMAX's "unit_list" observation of each ally; state: SMAX's `world_state`, whose layout
  (read from jaxmarl's `SMAX.get_world_state`) is, for every unit (allies first, then enemies):
      [health / max health, x, y, weapon cooldown (s), one-hot of 6 unit types]  (all 0 if dead)
  followed by every unit's team (0 ally, 1 enemy) and every unit's type index.
- reward: SMAX gives each ally the same team reward, (enemy health lost this step as fractions
  of max health, summed) / n_enemies, plus `won_battle_bonus` (1) when the last enemy dies with an
  ally alive. An episode therefore returns at most 2; SMAC's shaped reward is scaled to 20.
- ends: terminated when one side is all dead (won, lost, or a draw when both die in the same
  step); `episode_limit` steps (SMAC's limit for the map by default) end as a truncation with
  info["episode_limit"]; info also has battle_won, dead_allies, dead_enemies every step.

Known deviations from SMAC: simplified dynamics (no pathing/terrain, units push each other
apart, touching the map edge kills a unit, attacks land instantly with a randomised cooldown),
a different enemy AI, a different reward scale, and no last-action part in the state.

Speed: one jitted function does SMAX step + avail mask + obs/state + outcome, the RNG key stays
on the device, and each step copies one packed float32 buffer to the host. Compiled functions
are shared by all envs with the same settings in a process. JAX runs on the CPU (JAX_PLATFORMS
defaults to cpu here so jax never claims a GPU that torch uses). Set JAX_COMPILATION_CACHE_DIR to
reuse compiled code across processes (first build ~5 s of compiling per map otherwise). JAX does
not survive os.fork(): worker processes must be spawned (SMAXEnv.fork_safe is False), and an env
built in a child forked after JAX started raises instead of hanging.
"""
import functools
import importlib
import importlib.util
import os
import sys
import types

import numpy as np

from envs import episode as ep_text
from envs.description import Field, render_state
from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args

# SMAC's episode limit per map (smac_maps.py); SMAX's step is 0.5 s of game time like SMAC's (step_mul 8)
SMAC_EPISODE_LIMITS = {
    "3m": 60, "8m": 120, "25m": 150, "5m_vs_6m": 70, "10m_vs_11m": 150, "27m_vs_30m": 180,
    "2s3z": 120, "3s5z": 150, "3s5z_vs_3s6z": 170, "3s_vs_5z": 250, "6h_vs_8z": 150,
    "smacv2_5_units": 200, "smacv2_10_units": 200, "smacv2_20_units": 200,  # SMACv2's 10gen_* limit
}
DEFAULT_LIMIT = 100  # SMAX's own max_steps, for maps registered by the user
SMAC_MOVES = ("north", "south", "east", "west")
# SMAC action index -> SMAX action index (SMAX: 0 north, 1 east, 2 south, 3 west, 4 stop, 5 + j attack j)
_SMAC_TO_SMAX_HEAD = (4, 4, 0, 2, 1, 3)
N_SCALARS = 5  # reward, won, episode over, dead allies, dead enemies
_fork = {"hook": False, "forked": False}  # whether this process is a fork of one that had started JAX
ENV_ARGS = ("map_name", "episode_limit", "enemy_attack_mode", "enemy_shoots", "see_enemy_actions",
            "walls_cause_death", "won_battle_bonus")


def _jax():
    """Import jax for the CPU (only here, so configs without SMAX never pay for it)."""
    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp
    return jax, jnp


def _import_smax():
    """jaxmarl's SMAX module, without running `jaxmarl/__init__`.

    That __init__ imports every JaxMARL env (storm, coin game, overcooked, ...) and takes ~5 s;
    SMAX needs none of them. Placeholder package modules make `import jaxmarl.environments.smax`
    load just SMAX and its two helpers; they are removed again afterwards, so a later plain
    `import jaxmarl` still runs the real package code (and reuses the loaded SMAX modules).
    """
    if "jaxmarl" not in sys.modules:
        root = importlib.util.find_spec("jaxmarl").submodule_search_locations[0]
        stubs = {"jaxmarl": root, "jaxmarl.environments": os.path.join(root, "environments")}
        for name, path in stubs.items():
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            sys.modules[name] = stub
        try:
            return importlib.import_module("jaxmarl.environments.smax")
        except ImportError:
            pass  # fall back to the ordinary import below
        finally:
            for name in stubs:
                sys.modules.pop(name, None)
    return importlib.import_module("jaxmarl.environments.smax")


def _strong(jax, jnp, tree):
    # reset() makes some weakly typed scalars; a step's output is strongly typed, and the
    # mismatch would make jit compile step() a second time (~4 s)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


class _Core:
    """The jitted SMAX functions of one setting, shared by every SMAXEnv that uses it."""

    def __init__(self, map_name, enemy_attack_mode, enemy_shoots, see_enemy_actions, walls_cause_death,
                 won_battle_bonus):
        if "jaxmarl" not in sys.modules and importlib.util.find_spec("jaxmarl") is None:
            raise ImportError("smax needs the SMAX extra: pip install jaxmarl==0.2.0 (pulls CPU jax), "
                              "or ./install.sh smax")
        jax, jnp = _jax()
        smax = _import_smax()
        maps = smax.smax_env.MAP_NAME_TO_SCENARIO
        if map_name not in maps:
            raise EnvValueError(f"smax: unknown map_name {map_name!r}; SMAX maps: {', '.join(maps)}")
        env = smax.HeuristicEnemySMAX(
            scenario=smax.map_name_to_scenario(map_name), enemy_shoots=bool(enemy_shoots),
            attack_mode=enemy_attack_mode, see_enemy_actions=bool(see_enemy_actions),
            walls_cause_death=bool(walls_cause_death), won_battle_bonus=float(won_battle_bonus))
        self.jax, self.env, self.sim = jax, env, env._env
        na, ne = env.num_allies, env.num_enemies
        self.n_agents, self.n_enemies, self.n_actions = na, ne, len(_SMAC_TO_SMAX_HEAD) + ne
        self.obs_size, self.state_size = env.obs_size, env.state_size
        # one packed float32 buffer per step: obs, state, avail mask, then the outcome scalars
        sizes = (na * self.obs_size, self.state_size, na * self.n_actions, N_SCALARS)
        self.bounds = np.cumsum((0,) + sizes)
        lut = jnp.asarray(_SMAC_TO_SMAX_HEAD + tuple(5 + j for j in range(ne)), dtype=jnp.int32)
        allies = env.agents
        f32 = jnp.float32

        def pack(state, obs, reward):
            alive = state.state.unit_alive
            ally_alive, enemy_alive = alive[:na], alive[na:]
            smax_avail = jnp.stack([env.get_avail_actions(state)[a] for a in allies])
            avail = jnp.concatenate([~ally_alive[:, None], ally_alive[:, None],  # no-op iff dead, stop iff alive
                                     smax_avail[:, jnp.array([0, 2, 1, 3])],  # SMAX N,E,S,W -> SMAC N,S,E,W
                                     smax_avail[:, 5:]], axis=1)
            won = ~enemy_alive.any() & ally_alive.any()
            over = ~enemy_alive.any() | ~ally_alive.any()
            scalars = jnp.stack([x.astype(f32) for x in (reward, won, over, na - ally_alive.sum(),
                                                         ne - enemy_alive.sum())])
            obs = jnp.stack([obs[a] for a in allies])
            return jnp.concatenate([obs.ravel().astype(f32), env.get_world_state(state).astype(f32),
                                    avail.ravel().astype(f32), scalars])

        def reset(key):
            key, sub = jax.random.split(key)
            obs, state = env.reset(sub)
            state = _strong(jax, jnp, state)
            return key, state, pack(state, obs, jnp.zeros((), f32))

        def step(key, state, actions):
            key, sub = jax.random.split(key)
            smax_actions = lut[actions]
            obs, state, rewards, _, _ = env.step_env(sub, state, {a: smax_actions[i] for i, a in enumerate(allies)})
            state = _strong(jax, jnp, state)
            return key, state, pack(state, obs, rewards[allies[0]])  # every ally gets the same team reward

        self.reset, self.step = jax.jit(reset), jax.jit(step)
        self.cpu = jax.devices("cpu")[0]
        if not _fork["hook"]:
            # JAX's runtime threads do not survive os.fork(): a forked child that uses it hangs
            os.register_at_fork(after_in_child=lambda: _fork.update(forked=True))
            _fork["hook"] = True

    def key(self, seed):
        # committed to the CPU, so the jitted functions run there even where jax has a GPU
        return self.jax.device_put(self.jax.random.PRNGKey(seed), self.cpu)


@functools.lru_cache(maxsize=None)
def _core(*settings):
    return _Core(*settings)


class SMAXEnv(MultiAgentEnv):
    VALID_ARGS = ENV_ARGS
    fork_safe = False  # needs a fresh (spawned) process once JAX has started in the parent

    def __init__(self, map_name="3m", episode_limit=None, enemy_attack_mode="closest", enemy_shoots=True,
                 see_enemy_actions=True, walls_cause_death=True, won_battle_bonus=1.0, seed=None,
                 common_reward=True, reward_scalarisation="sum", **kwargs):
        reject_unknown_args("smax", kwargs, ENV_ARGS)
        if enemy_attack_mode not in ("closest", "random"):
            raise EnvValueError(f"smax: enemy_attack_mode must be 'closest' or 'random', got {enemy_attack_mode!r}")
        self.set_reward_settings("smax", common_reward, reward_scalarisation)
        if _fork["forked"]:
            raise RuntimeError("smax: this process was forked after its parent started JAX, whose threads do not "
                               "survive a fork (JAX would hang here). Create SMAX envs in spawned processes "
                               "(multiprocessing 'spawn' context) or before JAX starts in the parent.")
        limit = SMAC_EPISODE_LIMITS.get(map_name, DEFAULT_LIMIT) if episode_limit is None else episode_limit
        if int(limit) < 1:
            raise EnvValueError(f"smax: episode_limit must be a positive number of steps, got {episode_limit!r}")
        self.map_name, self.episode_limit = map_name, int(limit)
        self.enemy_attack_mode, self.enemy_shoots = enemy_attack_mode, bool(enemy_shoots)
        self.won_battle_bonus = float(won_battle_bonus)
        # the SMAX reward is a team reward already (identical for every ally): no sum/mean over agents
        self._core = _core(map_name, enemy_attack_mode, bool(enemy_shoots), bool(see_enemy_actions),
                           bool(walls_cause_death), float(won_battle_bonus))
        core = self._core
        self.n_agents, self.n_enemies = core.n_agents, core.n_enemies
        self._rows = np.arange(self.n_agents)
        self._key = core.key(self._entropy_seed() if seed is None else int(seed))
        self.sim_state = None  # the current JaxMARL state (HeuristicEnemySMAX's), for inspection
        self._t = 0
        self.battles_won = self.battles_game = self.timeouts = 0

    @staticmethod
    def _entropy_seed():
        return int(np.random.SeedSequence().generate_state(1)[0])

    def seed(self, seed=None):
        """Seed the next reset; later resets continue the RNG."""
        self._key = self._core.key(self._entropy_seed() if seed is None else int(seed))

    def get_rng_state(self):
        """The JAX key every reset and step splits (unit types and positions, attack cooldowns), as a list of
        uint32 values."""
        return {"key": np.asarray(self._key).tolist()}

    def set_rng_state(self, state):
        core = self._core
        self._key = core.jax.device_put(np.asarray(state["key"], dtype=np.uint32), core.cpu)

    # --- episode ---
    def reset(self):
        self._key, self.sim_state, packed = self._core.reset(self._key)
        self._unpack(packed)
        self._t = 0
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if self.sim_state is None:
            raise RuntimeError("smax: call reset() before step()")
        acts = np.asarray(actions, dtype=np.int32).reshape(-1)
        try:
            valid = acts.size == self.n_agents and acts.min() >= 0 and self._avail[self._rows, acts].all()
        except IndexError:
            valid = False
        if not valid:
            raise ValueError(f"smax: actions {acts.tolist()} are not all available (one per agent, "
                             f"avail {self.get_avail_actions()})")
        self._key, self.sim_state, packed = self._core.step(self._key, self.sim_state, acts)
        reward, won, over, dead_allies, dead_enemies = self._unpack(packed)
        self._t += 1
        info = {"battle_won": bool(won), "dead_allies": int(dead_allies), "dead_enemies": int(dead_enemies)}
        terminated = bool(over)
        if terminated:
            self.battles_game += 1
            self.battles_won += int(won)
        elif self._t >= self.episode_limit:
            info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1
        return self.scalarise_reward(reward), terminated, info

    def _unpack(self, packed):
        buf = np.asarray(packed)  # the one device -> host copy of the step
        b = self._core.bounds
        self._obs = buf[b[0]:b[1]].reshape(self.n_agents, -1)
        self._state = buf[b[1]:b[2]]
        self._avail = buf[b[2]:b[3]].reshape(self.n_agents, -1)
        self._avail_list = None
        return buf[b[3]:b[4]].tolist()

    # --- observations / state / actions ---
    def get_obs(self):
        return list(self._obs)

    def get_obs_agent(self, agent_id):
        return self._obs[agent_id]

    def get_obs_size(self):
        return self._core.obs_size

    def get_state(self):
        return self._state

    def get_state_size(self):
        return self._core.state_size

    def get_avail_actions(self):
        if self._avail_list is None:
            self._avail_list = self._avail.astype(np.int64).tolist()
        return self._avail_list

    def get_avail_agent_actions(self, agent_id):
        return self.get_avail_actions()[agent_id]

    def get_total_actions(self):
        return self._core.n_actions

    def get_stats(self):
        games = max(self.battles_game, 1)
        return {"battles_won": self.battles_won, "battles_game": self.battles_game,
                "battles_draw": self.timeouts, "win_rate": self.battles_won / games, "timeouts": self.timeouts}

    # --- self-description ---
    def _unit_names(self):
        return ([f"ally_{i}" for i in range(self.n_agents)] + [f"enemy_{j}" for j in range(self.n_enemies)])

    def _type_table(self):
        sim = self._core.sim
        return [(name, float(sim.unit_type_health[k]), float(sim.unit_type_attacks[k]),
                 float(sim.unit_type_attack_ranges[k]), float(sim.unit_type_sight_ranges[k]),
                 float(sim.unit_type_velocities[k]), float(sim.unit_type_weapon_cooldowns[k]))
                for k, name in enumerate(sim.unit_type_names)]

    def state_schema(self):
        sim = self._core.sim
        types_ = self._type_table()
        health = ", ".join(f"{t[0]} {t[1]:g}" for t in types_)
        type_names = ", ".join(f"{k} {t[0]}" for k, t in enumerate(types_))
        per_unit = len(sim.own_features)
        step_s = sim.time_per_step * sim.world_steps_per_env_step
        edge = "; touching an edge kills the unit" if sim.walls_cause_death else ""
        fields = []
        for u, name in enumerate(self._unit_names()):
            b = u * per_unit
            side = "agent-controlled" if u < self.n_agents else "scripted enemy"
            fields += [
                Field(f"{name}.health", b, b + 1,
                      f"{name} ({side}): hit points / max hit points of its type ({health}), in [0, 1]; "
                      f"0 when dead (every value of a dead unit's block is 0)"),
                Field(f"{name}.position", b + 1, b + 3,
                      f"(x, y) of {name} in map units on the {sim.map_width}x{sim.map_height} map, origin at "
                      f"the south-west corner, x grows east, y grows north{edge}"),
                Field(f"{name}.weapon_cooldown", b + 3, b + 4,
                      f"seconds until {name} can fire again; <= 0 means ready (SMAX keeps counting down by "
                      f"{step_s:g} per step while the unit does not fire, so it goes below 0)"),
                Field(f"{name}.unit_type", b + 4, b + per_unit,
                      f"one-hot of {name}'s type over ({', '.join(t[0] for t in types_)})"),
            ]
        n = self.n_agents + self.n_enemies
        base = n * per_unit
        order = f"ally_0..ally_{self.n_agents - 1}, enemy_0..enemy_{self.n_enemies - 1}"
        fields += [
            Field("unit_teams", base, base + n, f"team of each unit in the order {order}: 0 ally, 1 enemy (constant)"),
            Field("unit_type_ids", base + n, base + 2 * n,
                  f"type index of each unit in the same order ({type_names}); kept after death"),
        ]
        return fields

    def action_meanings(self):
        moves = [f"move {d} ({axis})" for d, axis in zip(SMAC_MOVES, ("+y", "-y", "+x", "-x"))]
        return (["no-op (only for dead agents, who have no other action)", "stop"] + moves
                + [f"attack enemy_{j} (only when it is alive and within attack range)" for j in range(self.n_enemies)])

    def reward_description(self):
        bonus = self.won_battle_bonus
        how = "as a float" if self.common_reward else "to every agent (the same value)"
        return (f"Team reward (SMAX's; every ally gets the same, given {how}) each step = (sum over enemies of the "
                f"health each lost this step / its max health) / {self.n_enemies} enemies, plus {bonus:g} in the "
                f"step the last enemy dies while an ally is alive (battle won). Damage taken and ally deaths cost "
                f"nothing; dead agents still share the reward. An episode returns at most {1 + bonus:g}. "
                f"It ends when one side is all dead (terminal) or after {self.episode_limit} steps (truncation).")

    def task_summary(self):
        sim = self._core.sim
        types_ = {t[0]: t for t in self._type_table()}
        ids = [int(k) for k in np.asarray(sim.scenario)] if sim.scenario is not None else []
        present = sorted({sim.unit_type_names[k] for k in ids}) if not sim.smacv2_unit_type_generation \
            else list(types_)
        stats = "; ".join(f"{n}: {types_[n][1]:g} hp, {types_[n][2]:g} damage per shot, range {types_[n][3]:g}, "
                          f"sight {types_[n][4]:g}, speed {types_[n][5]:g}/s, cooldown {types_[n][6]:g} s"
                          for n in present)
        if sim.smacv2_unit_type_generation:
            teams = "Unit types are drawn uniformly at random each episode (enemies mirror the allies' types)"
        else:
            def team(part):
                names = [sim.unit_type_names[k] for k in part]
                return ", ".join(f"{names.count(n)} {n}" for n in dict.fromkeys(names))
            teams = (f"Allies: {team(ids[:self.n_agents])}; enemies: {team(ids[self.n_agents:])}")
        start = ("start positions are drawn from SMACv2's surrounded-or-reflected distribution"
                 if sim.smacv2_position_generation else
                 f"allies start near ({sim.map_width / 4:g}, {sim.map_height / 2:g}) and enemies near "
                 f"({3 * sim.map_width / 4:g}, {sim.map_height / 2:g}), +-2 in x and y")
        enemy = (f"it attacks the {self.enemy_attack_mode} enemy in range, else moves towards visible enemies"
                 if self.enemy_shoots else "it never shoots, it only moves towards visible enemies")
        return (f"SMAX map {self.map_name} (JaxMARL's re-implementation of a StarCraft II micromanagement battle, "
                f"not the game itself): {self.n_agents} agents each control one allied unit and must kill all "
                f"{self.n_enemies} enemy units, which a scripted heuristic controls ({enemy}). {teams}. Unit stats: "
                f"{stats}. The map is {sim.map_width}x{sim.map_height}; {start}. Each step is 0.5 s of game time; "
                f"the battle must be won within {self.episode_limit} steps.")

    def describe_state(self, state=None):
        """One line per unit (type, health, position, cooldown), then the raw fields."""
        state = self.get_state() if state is None else np.asarray(state)
        sim = self._core.sim
        n = self.n_agents + self.n_enemies
        per_unit = len(sim.own_features)
        type_ids = state[n * per_unit + n:].astype(int)
        lines = []
        for u, name in enumerate(self._unit_names()):
            block = state[u * per_unit:(u + 1) * per_unit]
            kind = sim.unit_type_names[type_ids[u]]
            if block[0] <= 0:
                lines.append(f"{name} ({kind}): dead")
                continue
            max_hp = float(sim.unit_type_health[type_ids[u]])
            cooldown = "ready" if block[3] <= 0 else f"{block[3]:.2f} s"
            lines.append(f"{name} ({kind}): health {block[0] * max_hp:.0f}/{max_hp:g}, "
                         f"position ({block[1]:.1f}, {block[2]:.1f}), weapon {cooldown}")
        return "\n".join(lines) + "\n" + render_state(self.state_schema(), state)

    def episode_sections(self, ep, max_steps):
        """SMAX's features (MisoDICE B.2.2, after O-MAPL's SMAC prompts): the outcome, deaths per side and when,
        each unit's health at the start and end, the actions (attacks by target), and a timeline of both sides."""
        sim = self._core.sim
        n = self.n_agents + self.n_enemies
        per_unit = len(sim.own_features)
        s = ep.states
        health = s[:, : n * per_unit].reshape(len(s), n, per_unit)[:, :, 0]  # fractions of max health
        type_ids = s[0, n * per_unit + n:].astype(int)
        max_hp = np.array([float(sim.unit_type_health[k]) for k in type_ids])
        alive = health > 0
        allies, enemies = slice(0, self.n_agents), slice(self.n_agents, n)
        a_end, e_end = int(alive[-1, allies].sum()), int(alive[-1, enemies].sum())
        if ep.terminated and e_end == 0 and a_end > 0:
            outcome = "WON: every enemy died while allies were alive"
        elif ep.terminated and a_end == 0 and e_end > 0:
            outcome = "LOST: every allied unit died"
        elif ep.terminated:
            outcome = "DRAW: both sides were wiped out in the same step"
        else:
            outcome = "not decided: the time limit ended the battle with both sides alive"
        names = self._unit_names()
        deaths = {}
        for u in range(n):
            gone = np.flatnonzero(alive[:-1, u] & ~alive[1:, u])
            if len(gone):
                deaths[u] = int(gone[0]) + 1
        lines = [f"Outcome: {outcome}.",
                 f"Allies alive at the end: {a_end} of {self.n_agents}; enemies alive: {e_end} of {self.n_enemies}.",
                 "Deaths (step): " + (", ".join(f"{names[u]} {t}" for u, t in sorted(deaths.items(),
                                                                                     key=lambda x: x[1])) or "none"),
                 "Health, start -> end (hit points):"]
        for u in range(n):
            kind = sim.unit_type_names[type_ids[u]]
            lines.append(f"- {names[u]} ({kind}): {health[0, u] * max_hp[u]:.0f} -> {health[-1, u] * max_hp[u]:.0f} "
                         f"of {max_hp[u]:g}")
        side_hp = [(health[:, side] * max_hp[side]).sum(1) for side in (allies, enemies)]
        lines.append(f"Total health lost: allies {side_hp[0][0] - side_hp[0][-1]:.0f} of {side_hp[0][0]:.0f}, "
                     f"enemies {side_hp[1][0] - side_hp[1][-1]:.0f} of {side_hp[1][0]:.0f}.")
        steps = ep_text.sample_steps(ep.length, max_steps)
        timeline = [f"Timeline ({len(steps)} of {ep.length + 1} steps; units alive and total hit points per side):"
                    ] if steps else []
        timeline += [f"- step {t}: allies {int(alive[t, allies].sum())} alive, {side_hp[0][t]:.0f} hp; enemies "
                     f"{int(alive[t, enemies].sum())} alive, {side_hp[1][t]:.0f} hp" for t in steps]
        return [ep_text.ending(self, ep), "\n".join(lines), ep_text.action_counts(self, ep), "\n".join(timeline)]
