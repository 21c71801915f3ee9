"""pymarl-API wrapper for gymnasium multi-agent envs (LBF and alike).

The wrapped env must have Tuple observation and action spaces with one entry per agent,
Discrete actions, and a `step` that returns per-agent rewards (list) or a team reward.

Episode ends:
- `terminated=True` (no `episode_limit` key) only for a true terminal of the env.
- `terminated=False, info["episode_limit"]=True` when `time_limit` steps were reached or
  the env itself truncated, so learners bootstrap from the last state.
The wrapper counts steps itself (no gymnasium TimeLimit). Envs that take a
`max_episode_steps` kwarg (LBF) report their own limit as `terminated=True`; their limit is
set to `time_limit + 1` so that any `terminated` they report within `time_limit` steps is a
real terminal (LBF: all food collected), including one on the very last step.

Rewards: `common_reward=True` gives a float (sum or mean over agents, `reward_scalarisation`);
`common_reward=False` gives a float32 array of shape (n_agents,).
"""
import dataclasses
import difflib
import importlib
import warnings

import gymnasium
import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvArgumentError, EnvValueError, MultiAgentEnv, env_name, signature_args
from envs.rng import PARTIAL, generator_state, make_generator

_NUMERIC = (bool, int, float, np.number, np.bool_)


# epymarl's gymma ids for the envs that have their own env config here: id (lower case, without a 'module:' prefix)
# -> (env config, what differs). epymarl registers the pz-mpe-* ids itself; gymnasium here does not know them.
EPYMARL_IDS = {
    "pz-mpe-simple-spread-v3": ("mpe_spread", "N=3 agents, 25-step episodes; env_args.N sets the number of agents; "
                                              "its reward is the original MPE one (less its -1 per step for self-"
                                              "collision), 2x epymarl's (pettingzoo's local_ratio=0.5 mix): "
                                              "env_args.local_ratio=0.5 gives epymarl's"),
    "pz-mpe-simple-adversary-v3": ("mpe_adversary", "the learner controls the good agents; the adversary runs a "
                                                    "fixed policy (env_args.adversary_policy)"),
    "pz-mpe-simple-tag-v3": ("mpe_tag", "the learner controls the predators; the prey runs a fixed policy "
                                        "(env_args.prey_policy), like epymarl's pretrained_wrapper=PretrainedTag"),
    "simplespread-v0": ("mpe_spread", "the old MPE fork's id; 25-step episodes"),
    "simpleadversary-v0": ("mpe_adversary", "the old MPE fork's id"),
    "simpletag-v0": ("mpe_tag", "the old MPE fork's id"),
}


def epymarl_config(key):
    """(env config, note) for an epymarl gymma id that has its own env config here, else None."""
    return EPYMARL_IDS.get(str(key or "").rpartition(":")[2].lower())


class GymmaKeyError(EnvArgumentError):
    """env_args.key names no env gymma can make (missing, not registered, or an epymarl id with its own config)."""


def _gym_spec(key):
    """The gymnasium EnvSpec of `key` ('module:EnvId' imports the module first); GymmaKeyError saying what to use
    where there is none."""
    if not key:
        raise GymmaKeyError(
            "gymma needs env_args.key, a gymnasium id such as "
            "'lbforaging:Foraging-8x8-2p-2f-coop-v3' (module:EnvId imports the module first)"
        )
    module, _, env_id = key.rpartition(":")
    ours = epymarl_config(key)
    if ours and env_id not in gymnasium.registry:
        config, note = ours
        raise GymmaKeyError(f"'{key}' is epymarl's id for an env that has its own env config here: use "
                            f"--env-config={config} instead of --env-config=gymma ({note}; config/envs/{config}.yaml)")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise GymmaKeyError(f"gymma: cannot import module '{module}' of env key '{key}': {e}") from e
    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=5, cutoff=0.6)
        hint = f" Close registered ids: {', '.join(close)}." if close else ""
        where = f" after importing '{module}'" if module else " (use 'module:EnvId' to import the registering module)"
        raise GymmaKeyError(f"gymma: gymnasium does not know env id '{env_id}'{where}.{hint}")
    return gymnasium.spec(env_id)


def gym_env_args(spec):
    """The keyword arguments the env of `spec` takes (its registered kwargs and its constructor's parameters), or
    None when its entry point takes **kwargs."""
    entry = spec.entry_point
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
    try:
        params = signature_args(entry.__init__ if isinstance(entry, type) else entry)
    except (TypeError, ValueError):  # no introspectable signature
        return None
    return None if params is None else tuple(dict.fromkeys((*spec.kwargs, *params)))


def _make_gym_env(key, time_limit, kwargs):
    if "max_episode_steps" in kwargs:
        raise EnvValueError("gymma: set the episode length with env_args.time_limit, not max_episode_steps")
    spec = _gym_spec(key)
    if "max_episode_steps" in spec.kwargs:
        # keep the env's own limit out of our window (see module docstring)
        spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "max_episode_steps": time_limit + 1})
    # -1: no gymnasium TimeLimit, the wrapper counts steps itself
    return gymnasium.make(spec, max_episode_steps=-1, disable_env_checker=True, **kwargs)


def registered_limit(key):
    """The episode length the env of `key` registers (a `max_episode_steps` kwarg, e.g. LBF's 50, or gymnasium's
    TimeLimit), or None."""
    spec = _gym_spec(key)
    limits = [v for v in (spec.kwargs.get("max_episode_steps"), spec.max_episode_steps) if isinstance(v, int) and v > 0]
    return min(limits) if limits else None


class GymmaWrapper(MultiAgentEnv):
    registry_name = "gymma"
    OWN_ARGS = ("key", "time_limit", "pretrained_wrapper")
    # epymarl's gymma makes the env with its registered limit and wraps it in TimeLimit(time_limit): the shorter
    # one ends the episode (LBF's 50 under gymma's default 100). Here time_limit alone does (datasets, checkpoints
    # and runs recorded with it stay usable), and a run where the two differ says so (`lbf` sets its own length).
    WARNS_REGISTERED_LIMIT = True

    @classmethod
    def config_notes(cls, env_args):
        """Warnings for a run's env_args: a time_limit above the env's registered episode length (epymarl's gymma
        would end the episodes there)."""
        limit = registered_limit(cls.gym_key(env_args.get("key"))) if cls.WARNS_REGISTERED_LIMIT else None
        asked = env_args.get("time_limit")
        if limit is None or not isinstance(asked, int) or isinstance(asked, bool) or asked <= limit:
            return []
        return [f"{cls.registry_name}: '{env_args.get('key')}' registers {limit} steps per episode, where epymarl's "
                f"gymma ends its episodes; here env_args.time_limit={asked} does (episodes of up to {asked} steps). "
                f"For epymarl's episode length give env_args.time_limit={limit}"]

    @classmethod
    def accepted_args(cls, env_args):
        """The wrapper's own arguments and those of the env that `env_args.key` names (passed on to it); raises
        GymmaKeyError when the key names no env."""
        if "max_episode_steps" in env_args:
            raise EnvArgumentError(f"{cls.registry_name}: set the episode length with env_args.time_limit, "
                                   f"not max_episode_steps")
        env = gym_env_args(_gym_spec(cls.gym_key(env_args.get("key"))))
        return None if env is None else (*cls.OWN_ARGS, *(a for a in env if a != "max_episode_steps"))

    @classmethod
    def renders(cls, env_args):
        """LBF draws in a window (pyglet) whatever the render mode; the other gymnasium envs are built without one,
        so their render() draws nothing."""
        entry = _gym_spec(cls.gym_key(env_args.get("key"))).entry_point
        return "window" if str(getattr(entry, "__module__", entry)).startswith("lbforaging") else None

    @staticmethod
    def gym_key(key):
        """The gymnasium id that env_args.key stands for (subclasses add a module or check the family)."""
        return key

    def __init__(self, key=None, time_limit=100, seed=None, common_reward=True, reward_scalarisation="sum",
                 pretrained_wrapper=None, **kwargs):
        if pretrained_wrapper is not None:
            raise EnvValueError(f"gymma: pretrained_wrapper={pretrained_wrapper!r} is not supported (only null)")
        self.set_reward_settings("gymma", common_reward, reward_scalarisation)
        self.key = key
        if time_limit is None or int(time_limit) < 1:
            raise EnvValueError(f"gymma: env_args.time_limit must be a positive number of steps, got {time_limit!r}")
        self.episode_limit = int(time_limit)
        type(self).check_args(self.registry_name, {"key": key, **kwargs})  # unknown kwargs named, with suggestions
        self._env = _make_gym_env(key, self.episode_limit, kwargs)
        self._unwrapped = self._env.unwrapped

        obs_space, act_space = self._env.observation_space, self._env.action_space
        if not isinstance(obs_space, gymnasium.spaces.Tuple) or not isinstance(act_space, gymnasium.spaces.Tuple):
            raise EnvValueError(f"gymma: '{key}' needs Tuple observation and action spaces (one entry per agent), "
                             f"got {type(obs_space).__name__} / {type(act_space).__name__}")
        if len(obs_space) != len(act_space):
            raise EnvValueError(f"gymma: '{key}' has {len(obs_space)} observation but {len(act_space)} action spaces")
        bad = [type(s).__name__ for s in act_space if not isinstance(s, gymnasium.spaces.Discrete)]
        if bad:
            raise EnvValueError(f"gymma: only Discrete action spaces are supported, '{key}' has {bad}")
        self.n_agents = len(act_space)
        self._obs_spaces = list(obs_space)
        # Box obs are just raveled; other spaces go through gymnasium's flatten (one-hot etc.)
        self._flatten = [not isinstance(s, gymnasium.spaces.Box) for s in self._obs_spaces]
        self._obs_sizes = [gymnasium.spaces.flatdim(s) for s in self._obs_spaces]
        self._obs_size = max(self._obs_sizes)
        self._homogeneous = not any(self._flatten) and len({s.shape for s in self._obs_spaces}) == 1
        self._n_actions = [int(s.n) for s in act_space]
        self._n_total = max(self._n_actions)
        self._action_starts = [int(s.start) for s in act_space]
        self._shift_actions = any(self._action_starts)

        # LBF exposes valid actions per player; other envs: all own actions available
        self._lbf = hasattr(self._unwrapped, "_valid_actions") and hasattr(self._unwrapped, "players")
        # LBF's Action enum members by index (its module defines the enum next to the env class)
        self._lbf_actions = None
        if self._lbf:
            action_enum = importlib.import_module(type(self._unwrapped).__module__).Action
            self._lbf_actions = sorted(action_enum, key=lambda a: a.value)[: self._n_total]
        self._static_avail = [[1] * n + [0] * (self._n_total - n) for n in self._n_actions]

        self._seed = seed
        self._t = 0
        self._obs = np.zeros((self.n_agents, self._obs_size), dtype=np.float32)
        self._warned_scalar = False

    # --- episode ---
    def reset(self):
        seed, self._seed = self._seed, None  # seed only the first reset; later ones continue the RNG
        obs, _ = self._env.reset(seed=seed)
        self._t = 0
        self._set_obs(obs)
        return self.get_obs(), self.get_state()

    def seed(self, seed=None):
        """Seed the next reset (later resets continue the env RNG)."""
        self._seed = seed

    def get_rng_state(self):
        """The gymnasium env's `np_random` (LBF's food and player placement; what gymnasium envs draw from) and the
        seed the next reset takes, if any; LBF: also where its players stand, which its reset reads (a cell a player
        stood on in the last episode is redrawn). An env that draws from elsewhere (Python's or numpy's global RNG:
        the run saves those itself) or whose reset reads more of the last episode is not covered: for any env but
        LBF (the one whose code we know) the state says so (envs.rng.PARTIAL), and checkpoints and resumes warn."""
        state = {"pending_seed": self._seed, "np_random": generator_state(self._unwrapped._np_random)}
        if self._lbf:
            state["lbf_positions"] = [None if p.position is None else [int(x) for x in p.position]
                                      for p in self._unwrapped.players]
        else:
            state[PARTIAL] = (f"env {env_name(self)} saves only its gymnasium np_random, not other state the env "
                              f"may keep (RNGs of its own, what its reset reads of the last episode; LBF's is "
                              f"saved); if it keeps any")
        return state

    def set_rng_state(self, state):
        self._seed = state["pending_seed"]
        self._unwrapped._np_random = make_generator(state["np_random"])
        if self._lbf:
            for player, position in zip(self._unwrapped.players, state["lbf_positions"], strict=True):
                player.position = None if position is None else tuple(position)

    def step(self, actions):
        if isinstance(actions, list) and type(actions[0]) is int:
            acts = actions
        else:
            acts = np.asarray(actions).reshape(-1).tolist()
        if self._shift_actions:
            acts = [a + s for a, s in zip(acts, self._action_starts, strict=True)]
        obs, rewards, terminated, truncated, env_info = self._env.step(acts)
        self._t += 1
        self._set_obs(obs)

        if not isinstance(terminated, (bool, np.bool_)):
            terminated = all(terminated)
        if not isinstance(truncated, (bool, np.bool_)):
            truncated = all(truncated)
        info = {k: v for k, v in env_info.items() if isinstance(v, _NUMERIC)} if env_info else {}
        if terminated:
            terminated = True
        else:
            terminated = False
            if truncated or self._t >= self.episode_limit:
                info["episode_limit"] = True
        return self._reward(rewards), terminated, info

    def _reward(self, rewards):
        if isinstance(rewards, (list, tuple, np.ndarray)):
            return self.scalarise_reward(list(rewards))  # a list: summed in order, as before
        if not self.common_reward and not self._warned_scalar:
            warnings.warn(f"gymma: '{self.key}' returns a scalar reward; common_reward=False gives it to every agent",
                          stacklevel=3)
            self._warned_scalar = True
        return self.scalarise_reward(rewards)

    def _set_obs(self, obs):
        # a fresh buffer each step, so returned obs/state (views of it; read-only) stay valid later
        if self._homogeneous:
            self._obs = np.array(obs, dtype=np.float32).reshape(self.n_agents, self._obs_size)
            return
        buf = np.zeros((self.n_agents, self._obs_size), dtype=np.float32)
        for i, o in enumerate(obs):
            if self._flatten[i]:
                o = gymnasium.spaces.flatten(self._obs_spaces[i], o)
            buf[i, : self._obs_sizes[i]] = np.ravel(o)
        self._obs = buf

    # --- observations / state ---
    def get_obs(self):
        return list(self._obs)

    def get_obs_agent(self, agent_id):
        return self._obs[agent_id]

    def get_obs_size(self):
        return self._obs_size

    def get_state(self):
        return self._obs.reshape(-1)

    def get_state_size(self):
        return self.n_agents * self._obs_size

    # --- actions ---
    def get_avail_actions(self):
        if not self._lbf:
            return [list(a) for a in self._static_avail]
        env = self._unwrapped
        valid = env._valid_actions
        return [[1 if a in valid[p] else 0 for a in self._lbf_actions] for p in env.players]

    def get_avail_agent_actions(self, agent_id):
        if not self._lbf:
            return list(self._static_avail[agent_id])
        env = self._unwrapped
        valid = env._valid_actions[env.players[agent_id]]
        return [1 if a in valid else 0 for a in self._lbf_actions]

    def get_total_actions(self):
        return self._n_total

    # --- self-description (the state is the agents' padded observations, concatenated) ---
    def state_schema(self):
        if self._lbf:
            return self._lbf_schema()
        return [Field(f"agent_{i}_obs", i * self._obs_size, (i + 1) * self._obs_size,
                      f"agent {i}'s flattened observation (zero-padded to {self._obs_size} values)")
                for i in range(self.n_agents)]

    def _lbf_schema(self):
        # lbforaging 2.0's vector observation: (row, col, level) per food, then per player (self
        # first) (row, col[, level]); unseen or picked-up entries are (-1, -1, 0)
        env = self._unwrapped
        n_food, per_player = env.max_num_food, 3 if env._observe_agent_levels else 2
        player_part = "(row, column, level)" if per_player == 3 else "(row, column)"
        fields = []
        for i in range(self.n_agents):
            base = i * self._obs_size
            for j in range(n_food):
                fields.append(Field(f"agent_{i}_view.food_{j}", base + 3 * j, base + 3 * j + 3,
                                    f"(row, column, level) of the j-th food agent {i} sees, in row-major order; "
                                    f"(-1, -1, 0) if picked up or out of sight"))
            for k in range(self.n_agents):
                start = base + 3 * n_food + per_player * k
                who = "agent itself" if k == 0 else f"{k}-th other agent it sees"
                fields.append(Field(f"agent_{i}_view.player_{k}", start, start + per_player,
                                    f"{player_part} of the {who} (agent {i}'s view); -1s if out of sight"))
        return fields

    def action_meanings(self):
        if self._lbf:
            names = {"NONE": "stay", "NORTH": "move north (row - 1)", "SOUTH": "move south (row + 1)",
                     "WEST": "move west (column - 1)", "EAST": "move east (column + 1)",
                     "LOAD": "load (pick up) an adjacent food"}
            return [names.get(a.name, a.name.lower()) for a in self._lbf_actions]
        return [f"action {k}" for k in range(self._n_total)]

    def task_summary(self):
        return (f"The gymnasium multi-agent env '{self.key}' with {self.n_agents} cooperating agents; "
                f"episodes last at most {self.episode_limit} steps.")

    def reward_description(self):
        how = self.reward_scalarisation
        if self._lbf:
            return (f"Team reward = {how} of the agents' rewards. A food is collected when the adjacent agents that "
                    f"choose load have levels adding up to at least its level; each of them then gets "
                    f"food level x own level / (their total level x total level of all food spawned), so the "
                    f"agents' rewards over a whole episode add up to 1 when all food is collected. No other "
                    f"reward; the episode ends when all food is collected or after {self.episode_limit} steps.")
        return f"Team reward = {how} of the per-agent rewards of '{self.key}'."

    # --- misc ---
    def get_stats(self):
        return {}

    def render(self):
        return self._env.render()

    def close(self):
        self._env.close()
