"""SMAC and SMACv2 (StarCraft II unit micromanagement) behind the pymarl env API.

`sc2` wraps `smac.env.StarCraft2Env` (oxwhirl/smac), `sc2v2` wraps smacv2's
`StarCraftCapabilityEnvWrapper` (oxwhirl/smacv2; a StarCraft2Env plus a `capability_config` that
draws unit types and start positions each episode). env_args go to StarCraft2Env unchanged
(map_name, difficulty, reward_*, obs_*, state_*, ...), so pymarl's sc2 configs work as they are.

Neither can be installed from PyPI here, and this module imports without them:
- the package, from git: pip install git+https://github.com/oxwhirl/smac.git (or .../smacv2.git).
  PyPI's "smac" is SMAC3, an unrelated hyperparameter optimiser; it is detected and reported.
- StarCraft II 4.10 and the SMAC maps: ./install_sc2.sh, then export SC2PATH=<repo>/3rdparty/StarCraftII.
Constructing the env without them raises SC2Unavailable saying what is missing; `--env-config=smax`
(envs/smax.py, JaxMARL's JAX re-implementation) runs without StarCraft II.

pymarl semantics on top of SMAC's own API:
- SMAC ends a time-out with terminated=True (and episode_limit only with continuing_episode);
  here a time-out returns terminated=False, info["episode_limit"]=True (detected from SMAC's
  `timeouts` counter), so learners bootstrap. A won, lost or drawn battle is terminated=True.
  info keeps SMAC's battle_won, dead_allies, dead_enemies (numbers only).
- the reward is SMAC's team reward; common_reward=False hands the same value to every agent.
- seed: StarCraft II's game seed, used when the game is launched (first reset, full restarts);
  SC2 is not bit-reproducible, and smacv2's capability draws use their own unseeded RNG.
- StarCraft II is launched (StarCraft2Env._launch: the first reset, full restarts) with SIGINT blocked
  (utils.signals.children_sigint_blocked), so a terminal's Ctrl-C, which signals the whole process group, leaves
  the game running and the training loop stops at its safe point (run/interrupt.py).
- state_schema/action_meanings/reward_description are built from the StarCraft2Env's own
  sizes and flags, following its get_state(): per ally [health, weapon cooldown (or Medivac
  energy), relative x, relative y, shield (Protoss), SMACv2 capabilities, unit type bits], per
  enemy [health, relative x, relative y, shield, unit type bits], then last actions and the
  timestep if enabled.
"""
import copy
import functools
import importlib
import importlib.util
import os

import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args, signature_args
from envs.rng import EnvRngUnsupported
from utils.signals import children_sigint_blocked

SMAX_HINT = ("Without StarCraft II, use --env-config=smax: JaxMARL's SMAX re-implementation of the SMAC maps "
             "(pip install jaxmarl==0.2.0, or ./install.sh smax).")
REPOS = {"smac": "https://github.com/oxwhirl/smac.git", "smacv2": "https://github.com/oxwhirl/smacv2.git"}
RACES = {"P": "Protoss", "T": "Terran", "Z": "Zerg", "R": "random race"}
DIFFICULTIES = {"1": "VeryEasy", "2": "Easy", "3": "Medium", "4": "MediumHard", "5": "Hard", "6": "Harder",
                "7": "VeryHard", "8": "CheatVision", "9": "CheatMoney", "A": "CheatInsane"}
# unit type one-hot order (ally, enemy) per SMAC map_type, from StarCraft2Env.get_unit_type_id
UNIT_TYPE_BITS = {
    "stalkers_and_zealots": (("stalker", "zealot"), ("zealot", "stalker")),  # enemy bits reversed in SMAC
    "colossi_stalkers_zealots": (("colossus", "stalker", "zealot"),) * 2,
    "MMM": (("marauder", "marine", "medivac"),) * 2,
    "bane": (("baneling", "zergling"),) * 2,
    "protoss_gen": (("stalker", "zealot", "colossus"),) * 2,
    "terran_gen": (("marine", "marauder", "medivac"),) * 2,
    "zerg_gen": (("zergling", "hydralisk", "baneling"),) * 2,
}
MAX_COOLDOWN = ("marine 15, marauder 25, stalker 35, zealot 22, colossus 24, hydralisk 10, zergling 11, "
                "baneling 1 game steps; others 15")
MAX_SHIELD = "stalker 80, zealot 50, colossus 150"


class SC2Unavailable(ImportError):
    """SMAC/SMACv2 or StarCraft II is not installed."""


def install_help(package):
    return (f"To use it: pip install git+{REPOS[package]} (PyPI's 'smac' is SMAC3, a hyperparameter optimiser, "
            f"not this), then ./install_sc2.sh (StarCraft II 4.10 + SMAC maps into 3rdparty/StarCraftII) and "
            f"export SC2PATH=$(pwd)/3rdparty/StarCraftII. {SMAX_HINT}")


def load_package(package):
    """`package.env` (smac or smacv2), or SC2Unavailable saying what is wrong."""
    if importlib.util.find_spec(package) is None:
        raise SC2Unavailable(f"the python package '{package}' (StarCraft Multi-Agent Challenge) is not installed. "
                             + install_help(package))
    try:
        return importlib.import_module(f"{package}.env")
    except ModuleNotFoundError as e:
        if e.name in (package, f"{package}.env"):
            raise SC2Unavailable(
                f"the installed '{package}' package has no '{package}.env': it is not the StarCraft Multi-Agent "
                f"Challenge (PyPI's 'smac' is SMAC3, a hyperparameter optimiser). pip uninstall {package}, then "
                + install_help(package)) from e
        raise SC2Unavailable(f"'{package}' is installed but its dependency '{e.name}' is missing ({e}). "
                             f"Reinstall with: pip install git+{REPOS[package]}") from e


def find_sc2(environ=None):
    """StarCraft II's directory (SC2PATH, else pysc2's Linux default ~/StarCraftII), checked for the SMAC maps."""
    environ = os.environ if environ is None else environ
    path = environ.get("SC2PATH") or os.path.expanduser("~/StarCraftII")
    where = f"SC2PATH={path}" if environ.get("SC2PATH") else f"{path} (SC2PATH is not set)"
    if not os.path.isdir(os.path.join(path, "Versions")):
        raise SC2Unavailable(f"StarCraft II is not installed at {where}: no Versions/ directory. Run "
                             f"./install_sc2.sh and export SC2PATH=$(pwd)/3rdparty/StarCraftII. {SMAX_HINT}")
    if not os.path.isdir(os.path.join(path, "Maps", "SMAC_Maps")):
        raise SC2Unavailable(f"the SMAC maps are missing: no {os.path.join(path, 'Maps', 'SMAC_Maps')}. "
                             f"./install_sc2.sh downloads them. {SMAX_HINT}")
    return path


def check_env_args(cls, env_args, name):
    valid = signature_args(cls.__init__)
    if valid is not None:
        reject_unknown_args(name, env_args, valid)


def translate_step(reward, terminated, info, timed_out):
    """SMAC's (reward, terminated, info) in pymarl terms: a time-out is a truncation, not a terminal."""
    out = {k: v for k, v in (info or {}).items()
           if isinstance(v, (bool, int, float, np.number, np.bool_)) and k != "episode_limit"}
    out["battle_won"] = bool(out.get("battle_won", False))
    if timed_out or (info or {}).get("episode_limit"):
        out["episode_limit"] = True
        return float(reward), False, out
    return float(reward), bool(terminated), out


class SMACEnv(MultiAgentEnv):
    package = "smac"
    registry_name = "sc2"
    RENDERS = "window"  # StarCraft2Env.render(): a pygame window
    SAVES_REPLAYS = True

    @classmethod
    def accepted_args(cls, env_args):
        """StarCraft2Env's arguments when its package is installed (else None: the run reports the missing package)."""
        try:
            module = load_package(cls.package)
        except SC2Unavailable:
            return None
        valid = signature_args(module.StarCraft2Env.__init__)
        return None if valid is None else (*valid, *(("capability_config",) if cls.package == "smacv2" else ()))

    def __init__(self, map_name="3m", seed=None, common_reward=True, reward_scalarisation="sum", **env_args):
        self.set_reward_settings(self.registry_name, common_reward, reward_scalarisation)
        self._attach(self._build(map_name=map_name, seed=seed, **env_args))

    @classmethod
    def wrap(cls, sc2_env, common_reward=True):
        """Wrap an existing StarCraft2Env (or smacv2 StarCraftCapabilityEnvWrapper) object."""
        self = cls.__new__(cls)
        self.set_reward_settings(cls.registry_name, common_reward, "sum")
        self._attach(sc2_env)
        return self

    def _build(self, **env_args):
        module = load_package(self.package)
        check_env_args(module.StarCraft2Env, env_args, self.registry_name)
        find_sc2()
        return module.StarCraft2Env(**env_args)

    def _attach(self, env):
        self._env = env
        self._sc2 = getattr(env, "env", env)  # the StarCraft2Env inside smacv2's capability wrapper
        launch = getattr(self._sc2, "_launch", None)
        if launch is not None and not hasattr(launch, "__wrapped__"):
            self._sc2._launch = launched_with_sigint_blocked(launch)
        self.n_agents = int(self._sc2.n_agents)
        self.n_enemies = int(self._sc2.n_enemies)
        self.episode_limit = int(self._sc2.episode_limit)
        self.map_name = self._sc2.map_name

    # --- episode ---
    def reset(self):
        out = self._env.reset()
        if isinstance(out, tuple) and len(out) == 2:
            return [np.asarray(o, dtype=np.float32) for o in out[0]], np.asarray(out[1], dtype=np.float32)
        return self.get_obs(), self.get_state()  # smacv2's wrapper returns None after a retried reset

    def step(self, actions):
        acts = [int(a) for a in np.asarray(actions).reshape(-1)]
        timeouts = self._sc2.timeouts
        reward, terminated, info = self._env.step(acts)
        reward, terminated, info = translate_step(reward, terminated, info, self._sc2.timeouts > timeouts)
        # SMAC has a single team reward; the reward settings have nothing to sum or average
        return self.scalarise_reward(reward), terminated, info

    def seed(self, seed=None):
        """StarCraft II's game seed; it takes effect when the game is (re)launched."""
        self._sc2._seed = seed

    SC2_RNG = "StarCraft II's game RNG lives in the game process, which cannot read or set it (nor is SC2 bit-exact)"

    def get_rng_state(self):
        raise EnvRngUnsupported(self, self.SC2_RNG)

    def set_rng_state(self, state):
        raise EnvRngUnsupported(self, self.SC2_RNG)

    # --- observations / state / actions ---
    def get_obs(self):
        return [np.asarray(o, dtype=np.float32) for o in self._env.get_obs()]

    def get_obs_agent(self, agent_id):
        return np.asarray(self._env.get_obs_agent(agent_id), dtype=np.float32)

    def get_obs_size(self):
        return self._env.get_obs_size()

    def get_state(self):
        return np.asarray(self._env.get_state(), dtype=np.float32)

    def get_state_size(self):
        return self._env.get_state_size()

    def get_avail_actions(self):
        return [list(self._env.get_avail_agent_actions(i)) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return list(self._env.get_avail_agent_actions(agent_id))

    def get_total_actions(self):
        return self._env.get_total_actions()

    def get_stats(self):
        try:
            return self._env.get_stats()
        except ZeroDivisionError:  # SMAC's win_rate before the first finished battle
            return {}

    def render(self):
        return self._env.render()

    def save_replay(self):
        self._env.save_replay()

    def close(self):
        self._env.close()

    # --- self-description (from StarCraft2Env's sizes and flags) ---
    def _type_names(self, ally):
        names = UNIT_TYPE_BITS.get(self._sc2.map_type)
        bits = self._sc2.unit_type_bits
        if self.package == "smacv2" and not self._sc2.map_type.endswith("_gen"):
            names = None  # smacv2 numbers the old maps' types differently (get_unit_type_id)
        if names is None or len(names[0]) != bits:
            return f"one-hot of the unit type id ({bits} bits, order of the map's unit ids)"
        order = names[0] if ally else names[1]
        return f"one-hot of the unit type over ({', '.join(order)})"

    def _ally_features(self):
        e = self._sc2
        stochastic_health = getattr(e, "stochastic_health", False)
        health = ("hit points / max hit points, in [0, 1]" if not stochastic_health else
                  "(health fraction - health_level) / (1 - health_level): SMACv2 stochastic health, the unit "
                  "dies when its health fraction falls below its health_level")
        feats = [("health", 1, health),
                 ("cooldown", 1, f"weapon cooldown / max cooldown of its type ({MAX_COOLDOWN}); for Medivacs "
                                 f"energy / 200"),
                 ("position", 2, "(x - map centre x) / playable width, (y - map centre y) / playable height: "
                                 "about [-0.5, 0.5], x grows east, y grows north")]
        if e.shield_bits_ally:
            feats.append(("shield", 1, f"shield / max shield ({MAX_SHIELD})"))
        if getattr(e, "stochastic_attack", False):
            feats.append(("attack_probability", 1, "SMACv2: probability that its attacks are carried out"))
        if stochastic_health:
            feats.append(("health_level", 1, "SMACv2: health fraction below which the unit dies"))
        if getattr(e, "conic_fov", False):
            feats.append(("fov_direction", 2, "SMACv2: unit vector of its field-of-view cone"))
        if e.unit_type_bits:
            feats.append(("unit_type", e.unit_type_bits, self._type_names(ally=True)))
        return feats

    def _enemy_features(self):
        e = self._sc2
        feats = [("health", 1, "hit points / max hit points, in [0, 1]"),
                 ("position", 2, "(x - map centre x) / playable width, (y - map centre y) / playable height")]
        if e.shield_bits_enemy:
            feats.append(("shield", 1, f"shield / max shield ({MAX_SHIELD})"))
        if e.unit_type_bits:
            feats.append(("unit_type", e.unit_type_bits, self._type_names(ally=False)))
        return feats

    def state_schema(self):
        e = self._sc2
        size = self.get_state_size()
        if e.obs_instead_of_state:
            obs = self.get_obs_size()
            return [Field(f"agent_{i}_obs", i * obs, (i + 1) * obs,
                          f"agent {i}'s SMAC observation (obs_instead_of_state): movement availability, then per "
                          f"enemy and per other ally (visible/attackable, distance, relative x, y, health...), "
                          f"then own features; all 0 if the agent is dead") for i in range(self.n_agents)]
        fields, start = [], 0
        for prefix, count, feats, who in (("ally", self.n_agents, self._ally_features(), "agent-controlled"),
                                          ("enemy", self.n_enemies, self._enemy_features(), "built-in AI")):
            for u in range(count):
                for name, width, meaning in feats:
                    fields.append(Field(f"{prefix}_{u}.{name}", start, start + width,
                                        f"{who} {prefix} {u}: {meaning}; 0 when dead"))
                    start += width
        if e.state_last_action:
            for i in range(self.n_agents):
                fields.append(Field(f"ally_{i}.last_action", start, start + e.n_actions,
                                    f"one-hot of agent {i}'s previous action (all 0 at the first step)"))
                start += e.n_actions
        if e.state_timestep_number:
            fields.append(Field("timestep", start, start + 1, f"steps so far / episode limit {self.episode_limit}"))
            start += 1
        if start != size:
            raise NotImplementedError(f"{self.registry_name}: this StarCraft2Env's state ({size} values) does not "
                                      f"follow the SMAC layout described here ({start} values)")
        return fields

    def action_meanings(self):
        e = self._sc2
        moves = [f"move {d} ({axis}, by {getattr(e, '_move_amount', 2)})"
                 for d, axis in (("north", "+y"), ("south", "-y"), ("east", "+x"), ("west", "-x"))]
        meanings = ["no-op (only for dead agents, who have no other action)", "stop"] + moves
        n_fov = getattr(e, "n_fov_actions", 0)
        meanings += [f"turn the field-of-view cone to {360 * k / n_fov:g} degrees" for k in range(n_fov)]
        heals = e.map_type in ("MMM", "terran_gen")
        for j in range(e.n_actions - len(meanings)):
            if j >= self.n_enemies:
                meanings.append(f"heal ally {j} (Medivacs only)")
            else:
                meanings.append(f"attack enemy {j} (alive, within shooting range)"
                                + (f"; for Medivacs: heal ally {j}" if heals else ""))
        return meanings

    def reward_description(self):
        e = self._sc2
        scale = (f", then divided by max_reward / {e.reward_scale_rate:g}, where max_reward = {self.n_enemies} x "
                 f"{e.reward_death_value:g} + {e.reward_win:g} + the enemies' total max health and shield, so a "
                 f"perfect episode returns about {e.reward_scale_rate:g}") if e.reward_scale else ""
        if e.reward_sparse:
            body = f"+1 in the step the battle is won, -1 when it is lost, 0 otherwise{scale}"
        else:
            body = (f"damage dealt to enemy health and shields this step + {e.reward_death_value:g} per enemy "
                    f"killed, + {e.reward_win:g} when the battle is won")
            if e.reward_defeat:
                body += f", {e.reward_defeat:+g} when it is lost"
            if e.reward_only_positive:
                body += " (absolute value taken, since shield regeneration can make it negative)"
            else:
                body += (f", minus {e.reward_negative_scale:g} x (damage taken by the agents + "
                         f"{e.reward_death_value:g} per agent killed)")
            body += scale
        how = "as a float" if self.common_reward else "to every agent (the same value)"
        return (f"Team reward of SMAC (given {how}): {body}. The episode ends when a side is eliminated (terminal) "
                f"or after {self.episode_limit} steps (truncation).")

    def task_summary(self):
        e = self._sc2
        diff = str(getattr(e, "difficulty", "7"))
        v2 = ("; unit types and start positions are drawn each episode from the capability_config"
              if getattr(e, "capability_config", None) else "")
        ranges = ("sight and shooting ranges depend on the unit type (use_unit_ranges)"
                  if getattr(e, "use_unit_ranges", False) else "agents see units within 9 and shoot within 6")
        return (f"StarCraft II (SMAC) map {self.map_name}: {self.n_agents} agents each control one "
                f"{RACES.get(e._agent_race, e._agent_race)} unit against {self.n_enemies} "
                f"{RACES.get(e._bot_race, e._bot_race)} units of the game's built-in AI (difficulty {diff}, "
                f"{DIFFICULTIES.get(diff, '?')}){v2}. Win by killing every enemy within {self.episode_limit} steps "
                f"of {getattr(e, '_step_mul', 8)} game frames each; {ranges} (distance units of the map).")


def launched_with_sigint_blocked(launch):
    """StarCraft2Env's `_launch` (it starts the game process, on the first reset and on full restarts) starting it
    with SIGINT blocked: Ctrl-C in a terminal does not kill the game (utils/signals.py)."""
    @functools.wraps(launch)
    def wrapped(*args, **kwargs):
        with children_sigint_blocked():
            return launch(*args, **kwargs)
    return wrapped


class SMACv2Env(SMACEnv):
    package = "smacv2"
    registry_name = "sc2v2"

    def __init__(self, map_name="10gen_protoss", capability_config=None, seed=None, common_reward=True,
                 reward_scalarisation="sum", **env_args):
        if not capability_config:
            raise EnvValueError("sc2v2 needs env_args.capability_config (n_units, n_enemies, team_gen, "
                             "start_positions, ...); see config/envs/sc2v2.yaml")
        super().__init__(map_name=map_name, seed=seed, common_reward=common_reward,
                         reward_scalarisation=reward_scalarisation, capability_config=capability_config, **env_args)

    def _build(self, **env_args):
        module = load_package(self.package)
        check_env_args(module.StarCraft2Env, env_args, self.registry_name)
        find_sc2()
        wrapper = importlib.import_module("smacv2.env.starcraft2.wrapper")
        # the wrapper writes into capability_config; keep the caller's (config) dict intact
        env_args["capability_config"] = copy.deepcopy(env_args["capability_config"])
        return wrapper.StarCraftCapabilityEnvWrapper(**env_args)
