"""pymarl's MultiAgentEnv API.

`step(actions) -> (reward, terminated, info)`. A time-limit end is *not* a termination:
the env returns `terminated=False` (or True together with `info["episode_limit"]=True`,
pymarl's convention) so the learners bootstrap from the final state.

Envs also describe themselves for LLM prompts (see envs/description.py): `state_schema`,
`action_meanings`, `reward_description`, and text renderings built from them.

Rewards: every env takes `common_reward` and `reward_scalarisation` (envs.run_env_args adds them from the
config). Wrappers call `set_reward_settings` in their constructor and return `scalarise_reward(...)` from `step`.

Exact resume: `get_rng_state()` / `set_rng_state(state)` give and restore the env's own RNG state as plain values
(envs/rng.py), which checkpoints save between episodes; None: the env holds no randomness; EnvRngUnsupported (the
base class's default): it cannot, and a resumed run warns that its episodes differ from the uninterrupted run's.

Arguments: `MultiAgentEnv.check_args(name, env_args)` rejects unknown constructor arguments before anything is
built (src/main.py calls it before the run starts). The accepted names come from the constructor's signature; a
constructor that takes `**kwargs` declares `VALID_ARGS` (or overrides `accepted_args`) when it checks them itself,
else anything is accepted. Constructors reject unknown arguments with `reject_unknown_args`, the same message.

LCA hooks (agent-specific state rankings -> per-agent potentials; the base class raises MissingEnvHook naming the
method, so LCA can refuse an env that lacks one):
- `stay_action`: class attribute, the action index that means "stay still" (its shaped reward is 0), or None
  (the default: nothing is zeroed; LCA warns). Grid worlds 0, Pistonball 1.
- `agent_roles() -> list[str]` (n_agents): agents with the same role are interchangeable and may share a potential
  (Two-Switch ["agent", "agent"], Pistonball ["piston"] * n, Victim-Rubble ["healer", "remover"]).
- `obs_schema() -> list[envs.description.Field]`: the per-agent observation layout, ego first, tiling
  [0, get_obs_size()) once; `Field.identity` flags the fields that say who the agent is (role one-hot, agent id,
  colour). `envs.description.identity_dims(env)` lists their obs indices (a shared potential drops them).
- `describe_agent_view(state, agent_id) -> str`: the global state (get_state layout; None = the current one) told
  from agent_id's side, ego first, then its teammates.
- `task_dependencies() -> str`: who must do what first, for LCA's task-dependence prompt ("" = none; the default).
- `pair_oracle(state, actions, next_state, agent_id) -> "better" | "worse" | "equal"`: the rule-based ("human
  heuristic") ranking of agent_id's action `actions[agent_id]` in the transition state -> next_state (state vectors
  in get_state layout, `actions` the joint action [n_agents]). Each env's docstring writes its rule down.
- `oracle_actions(state=None) -> int64 [n_agents]`: a greedy joint action following the same rule (keysteps,
  tests); None = the current state. The grid worlds also take `rng=` (Generator or int seed) for tie-breaks.
- optional, not on the base class (`hasattr` tells): `sample_state(rng) -> float32 [S]`, a random reachable state
  (rng: numpy Generator or int seed) that set_state accepts, and `check_reachable(state)` (ValueError listing the
  broken rules). Envs without them (Pistonball) give LCA pairs from rollouts only.
"""
import difflib
import inspect

import numpy as np

from envs.description import render_segment, render_state, task_prompt
from envs.episode import as_episode, episode_text, generic_sections
from envs.rng import EnvRngUnsupported
from utils.config import CHOICES, ConfigError

REWARD_SCALARISATIONS = CHOICES["reward_scalarisation"]  # sum | mean
# set by the run for every env (envs.run_env_args): accepted by every env, not listed among its own arguments
RUN_ARGS = ("seed", "common_reward", "reward_scalarisation")


class EnvArgumentError(ConfigError, TypeError):
    """An env argument the env does not take (a TypeError, as Python's own for an unexpected keyword; a ConfigError:
    the user fixes it in env_args)."""


class EnvValueError(ConfigError):
    """An env argument's value the env cannot take (a ValueError). A ConfigError: raised while a run builds its env,
    it fails the run in one line and leaves no run folder (main.config_failure_cleanup), as a check before the run
    would."""


def reject_unknown_args(env, given, valid):
    """Raise EnvArgumentError for the names in `given` that `valid` lacks: "unknown env argument 'time_limt' for
    gymma; valid: key, time_limit, ...; did you mean 'time_limit'?"."""
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    own = [v for v in valid if v not in RUN_ARGS]
    close = {k: difflib.get_close_matches(k, own, n=1, cutoff=0.5) for k in unknown}
    hints = [f"'{c[0]}'" + (f" (for '{k}')" if len(unknown) > 1 else "") for k, c in close.items() if c]
    names = ", ".join(f"'{k}'" for k in unknown)
    plural = "s" if len(unknown) > 1 else ""
    message = f"unknown env argument{plural} {names} for {env}; valid: {', '.join(own) or '(none)'}"
    raise EnvArgumentError(message + (f"; did you mean {', '.join(hints)}?" if hints else ""))


def env_name(env):
    """The env's class and variant for messages, e.g. 'MPEEnv (simple_spread_v3)'."""
    variant = getattr(env, "key", None) or getattr(env, "scenario", None)  # gymma/lbf key, mpe scenario
    return f"{type(env).__name__} ({variant})" if variant else type(env).__name__


class NoObsHook(NotImplementedError):
    """An env without one of the optional obs hooks (`reward_from_obs`, `view_gap_from_obs`, `view_projection`,
    `snap_obs`): the
    message names the hook, the env, why, and the envs that have it."""

    def __init__(self, env, hook, why, supported):
        super().__init__(f"{hook}: env {env_name(env)}: {why}; {supported} has it")


class NoRewardFromObs(NoObsHook):
    """An env whose reward is not computed from its observations (the optional hook `reward_from_obs`)."""

    def __init__(self, env, why="its reward is not a function of the observations here"):
        super().__init__(env, "reward_from_obs", why, "MPE spread")


class ObsHooksUnsupported(NotImplementedError):
    """An env that cannot rebuild its state, available actions or terminals from observations (the obs hooks
    `state_from_obs`, `avail_actions_from_obs`, `terminal_from_obs`), so generated observations cannot become a
    dataset for it. `why` says what is missing when the env family has the hooks but this configuration does not."""

    def __init__(self, env, hook, why=None):
        name, reason = env_name(env), why or "it has no obs hooks"
        super().__init__(f"{hook}: env {name} is not supported: {reason}. CODI stitching supports MPE (env mpe, "
                         f"every scenario) and full-sight LBF (env lbf with a key without '-2s', sight >= grid "
                         f"size - 1, vector observations with agent levels); use one of those envs")


class MissingEnvHook(NotImplementedError):
    """An env that lacks a method a feature needs (LCA's agent_roles, obs_schema, pair_oracle, ...): names the env,
    the method and what to do."""

    def __init__(self, env, hook, feature="LCA"):
        super().__init__(f"{feature} needs the env method {hook}(), which env {env_name(env)} does not have; "
                         f"implement it (see envs/multiagentenv.py for the contract) or use an env that has it "
                         f"(two_switch, victim_rubble, pistonball)")
        self.hook = hook


def obs_array(env, obs, hook):
    """`obs` as a float64 array `[..., n, O]`; ValueError naming the shape the env expects otherwise."""
    obs = np.asarray(obs, dtype=np.float64)
    want = (env.n_agents, env.get_obs_size())
    if obs.ndim < 2 or obs.shape[-2:] != want:
        raise ValueError(f"{hook}: observations of {type(env).__name__} are [..., n_agents, obs_size] = "
                         f"[..., {want[0]}, {want[1]}], got shape {obs.shape}; pass the dataset's (denormalised) obs")
    return obs


def signature_args(function):
    """The keyword names `function` takes, or None when it takes **kwargs (anything)."""
    params = inspect.signature(function).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


class MultiAgentEnv:
    n_agents: int
    episode_limit: int
    stay_action = None  # LCA: the "stay still" action index (shaped reward 0), None when the env has none
    common_reward: bool = True
    reward_scalarisation: str = "sum"
    VALID_ARGS: tuple = None  # a constructor taking **kwargs that checks them itself names what it accepts here
    # what render() and save_replay() do, declared so that a run refuses render=True / save_replay=True where they
    # would do nothing or fail (run/preflight.py): RENDERS "window" (draws in a window: needs a display), "text"
    # (prints the state to the console) or None (draws nothing); SAVES_REPLAYS: save_replay() writes a replay
    RENDERS: str = None
    SAVES_REPLAYS: bool = False

    @classmethod
    def renders(cls, env_args):
        """How render() shows the env that `env_args` builds (see RENDERS; some depend on it, e.g. gymma's env id)."""
        return cls.RENDERS

    @classmethod
    def accepted_args(cls, env_args):
        """The constructor argument names this env accepts given `env_args` (some depend on it, e.g. gymma's env id),
        or None when it cannot tell (a constructor passing **kwargs on unchecked)."""
        if cls.VALID_ARGS is not None:
            return tuple(cls.VALID_ARGS)
        return signature_args(cls.__init__)

    @classmethod
    def config_notes(cls, env_args):
        """Warnings a run with these env_args gets before it starts (e.g. gymma: a length other than epymarl's);
        none by default."""
        return []

    @classmethod
    def check_args(cls, name, env_args):
        """Raise EnvArgumentError (a ConfigError) for an argument this env does not take; `name`: its registry name."""
        valid = cls.accepted_args(env_args)
        if valid is not None:
            reject_unknown_args(name, env_args, (*valid, *RUN_ARGS))

    def set_reward_settings(self, name, common_reward, reward_scalarisation):
        """Check and keep the reward settings; `name` starts the error message (the env family)."""
        if reward_scalarisation not in REWARD_SCALARISATIONS:
            raise EnvValueError(f"{name}: reward_scalarisation must be 'sum' or 'mean', got {reward_scalarisation!r}")
        self.common_reward = bool(common_reward)
        self.reward_scalarisation = reward_scalarisation

    def scalarise_reward(self, rewards):
        """The reward `step` returns. `rewards`: the agents' rewards (n_agents values) or one team reward (a scalar).
        common_reward: a float, the sum or mean (`reward_scalarisation`) of the agents' rewards, or the team reward;
        otherwise a float32 array (n_agents,): the agents' rewards, or the team reward for every agent.
        A NumPy array is summed by NumPy, a list or tuple in order by Python (each as the wrappers did before)."""
        if not isinstance(rewards, (list, tuple)) and np.ndim(rewards) == 0:  # np.ndim of a list costs ~1 us a step
            if self.common_reward:
                return float(rewards)
            return np.full(self.n_agents, rewards, dtype=np.float32)
        if not self.common_reward:
            return np.asarray(rewards, dtype=np.float32)
        total = float(rewards.sum() if isinstance(rewards, np.ndarray) else sum(rewards))
        return total / self.n_agents if self.reward_scalarisation == "mean" else total

    def step(self, actions):
        """Apply the joint action (one int per agent); return reward, terminated, info."""
        raise NotImplementedError

    def get_obs(self):
        """List of per-agent observation vectors."""
        raise NotImplementedError

    def get_obs_agent(self, agent_id):
        return self.get_obs()[agent_id]

    def get_obs_size(self):
        raise NotImplementedError

    def get_state(self):
        raise NotImplementedError

    def get_state_size(self):
        raise NotImplementedError

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return [1] * self.get_total_actions()

    def get_total_actions(self):
        raise NotImplementedError

    def reset(self):
        """Start a new episode; returns (obs, state)."""
        raise NotImplementedError

    def render(self):
        pass

    def close(self):
        pass

    def seed(self, seed=None):
        pass

    def save_replay(self):
        pass

    def get_stats(self):
        return {}

    # ----- exact resume: the env's own RNG state (envs/rng.py) -----
    def get_rng_state(self):
        """Everything the env's coming episodes draw from (its RNGs, a seed not yet taken by a reset, and what of the
        last episode the next reset reads, e.g. LBF's player positions), as plain values that
        torch.load(weights_only=True) loads (envs.rng converts numpy's generators); None for an env that holds no
        randomness. Checkpoints save it between episodes, so that a resumed run's next reset draws what the
        uninterrupted run's would have. An env that cannot give it raises EnvRngUnsupported (this default): a run
        resumed from its checkpoints warns that its episodes differ from the uninterrupted run's."""
        raise EnvRngUnsupported(self)

    def set_rng_state(self, state):
        """Restore a get_rng_state value: from here on the env draws as the env that gave it would have (a seed
        given at construction and not yet taken is replaced by the state's)."""
        raise EnvRngUnsupported(self)

    # ----- self-description for LLM prompts -----
    def task_summary(self):
        """A short paragraph: what the agents must achieve, map size, teams, episode length."""
        raise NotImplementedError(f"{type(self).__name__} does not summarise its task yet")

    def state_schema(self):
        """List of envs.description.Field covering get_state() exactly once."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its state yet")

    def action_meanings(self):
        """Meaning of each action index (shared by all agents)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its actions yet")

    def reward_description(self):
        raise NotImplementedError(f"{type(self).__name__} does not describe its reward yet")

    def describe_state(self, state=None):
        return render_state(self.state_schema(), self.get_state() if state is None else state)

    def describe_segment(self, states, actions, rewards):
        return render_segment(self.state_schema(), states, actions, rewards, self.action_meanings())

    def describe_task(self):
        """The task section of an LLM prompt (QLLM's task prompt, the labelers' context)."""
        return task_prompt(self)

    # ----- CODI's agent-quality prompt -----
    def agent_segment_report(self, obs, actions, rewards, obs_valid, step_valid):
        """What each agent did in a segment of H steps, for an LLM that names the best agent (CODI, App. E):
        `obs [H, n, O]`, `actions [H, n]`, team `rewards [H]`, `obs_valid [H]`, `step_valid [H]` (offline.segments:
        valid steps first, padding after). Returns a JSON-able dict: "legend" (how to read the numbers), "agents"
        (per agent {"scorecard": {name: value}, "timeline": [{"t": step, "action": name, ...} per valid step]}) and
        "team" ({name: value})."""
        variant = getattr(self, "key", None) or getattr(self, "scenario", None)
        name = f"{type(self).__name__} ({variant})" if variant else type(self).__name__
        raise NotImplementedError(f"agent_segment_report: env {name} has no per-agent segment report (MPE spread, "
                                  f"tag and world and LBF have one); add the hook to the env, or label with "
                                  f"labeler=oracle / noisy_oracle")

    def segment_arrays(self, obs, actions, obs_valid, step_valid):
        """agent_segment_report's inputs checked and converted: obs float64 [H, n, O], actions int64 [H, n] (or
        [H, n, 1]), obs_valid and step_valid bool [H] with a valid first step; ValueError naming the shapes."""
        obs = np.asarray(obs, dtype=np.float64)
        actions = np.asarray(actions)
        if actions.ndim == 3 and actions.shape[-1] == 1:
            actions = actions[..., 0]
        obs_valid, step_valid = np.asarray(obs_valid, dtype=bool), np.asarray(step_valid, dtype=bool)
        H = len(obs)
        if obs.shape[1:] != (self.n_agents, self.get_obs_size()) or actions.shape != (H, self.n_agents) \
                or obs_valid.shape != (H,) or step_valid.shape != (H,):
            raise ValueError(f"agent_segment_report: expected obs [H, {self.n_agents}, {self.get_obs_size()}], "
                             f"actions [H, {self.n_agents}], obs_valid and step_valid [H]; got {obs.shape}, "
                             f"{actions.shape}, {obs_valid.shape}, {step_valid.shape}")
        if not obs_valid[:1].all():
            raise ValueError("agent_segment_report: the segment's first observation must be valid (obs_valid[0])")
        return obs, actions.astype(np.int64), obs_valid, step_valid

    def describe_episode(self, states, actions, filled, terminated, rewards=None, max_steps=8):
        """A text summary of one stored episode for an LLM judge (envs/episode.py): `states [T+1, S]`,
        `actions [T+1, n(, 1)]`, `filled [T+1(, 1)]`, `terminated` (bool or per-step flags). `rewards` ([T+1(, 1)])
        adds the return (hidden unless the caller passes them); the timeline shows at most `max_steps` steps."""
        ep = as_episode(states, actions, filled, terminated, rewards)
        return episode_text(self.episode_sections(ep, max_steps), ep)

    def episode_sections(self, ep, max_steps):
        """The parts of `describe_episode`'s text (an envs.episode.Episode): the generic one from the state schema;
        envs with better features override this."""
        return generic_sections(self, ep, max_steps)

    # ----- obs hooks: what a generator that produces only observations needs (CODI stitching) -----
    def state_from_obs(self, obs, actions=None):
        """The global state from the agents' observations: `obs [..., T, n, O]` -> `[..., T, S]`, exactly as
        `get_state()` would give on those steps. Axis -3 is time, from an episode's first step, for envs whose state
        holds history (LBF: fixed food slots, last actions); `actions [..., T, n]` are the actions taken at each
        step (the last one unused). Envs with a per-step state accept any leading dims and ignore `actions`."""
        raise ObsHooksUnsupported(self, "state_from_obs")

    def avail_actions_from_obs(self, obs):
        """The available actions from the observations: `obs [..., n, O]` -> `[..., n, A]` (0/1 int64), as
        `get_avail_actions()` gives them at those steps."""
        raise ObsHooksUnsupported(self, "avail_actions_from_obs")

    def terminal_from_obs(self, obs):
        """`obs [..., n, O]` -> `[...]` bool: true where the observation is a real terminal (the episode has
        ended there; a time limit is not one). The transition that reaches it is the one stored as terminated."""
        raise ObsHooksUnsupported(self, "terminal_from_obs")

    def reward_from_obs(self, obs):
        """The reward `step` returns on arriving at observations `obs [..., n, O]`, for envs whose reward is a
        function of the observations: `[...]` with common_reward, else `[..., n]`. Optional (CODI's reports check
        generated episodes with it); envs without it raise NoRewardFromObs."""
        raise NoRewardFromObs(self)

    def view_gap_from_obs(self, obs):
        """How far the agents' observations `[..., n, O]` disagree with the world state the dataset keeps for
        them: `[...]`, the largest distance, in the env's own units, between where one agent's observation puts a
        shared thing (a landmark, a teammate, a food) and where the state has it. 0 up to float32 on real data; a
        generator that models each agent's view on its own can make views that no single world explains.
        Optional (CODI's `max_view_gap` filter and reports); envs without it raise NoObsHook."""
        raise NoObsHook(self, "view_gap_from_obs", "no cross-agent check of the observations here",
                        "MPE spread and full-sight LBF")

    def view_projection(self):
        """The linear map M `[n*O, n*O]` (float64, env units; joint observations flattened agent by agent, new =
        M @ old) that puts every agent's view of the shared things in one world, leaving what each agent alone
        knows (its position, its velocity) as it is. Identity on real observations and M @ M = M. Optional (CODI's
        `project_views`: generated views that no single world explains are pulled into one during denoising);
        envs without it raise NoObsHook."""
        raise NoObsHook(self, "view_projection", "no shared-world projection of the observations here", "MPE spread")

    def snap_obs(self, obs, first=None):
        """The observations the env would give for the world that `obs [..., n, O]` (env units) describes, as
        far as one observation can say: the same shape, the identity on real observations, and idempotent. With
        `first [..., n, O]`, the real observation before the steps `obs [..., T, n, O]`, what the env's rules keep
        from it is kept too. For envs whose observations take discrete values that a generator makes continuous.
        Optional (CODI's `snap_obs`: each generated segment is snapped, from its first observation, before the
        dynamics check); envs without it raise NoObsHook."""
        raise NoObsHook(self, "snap_obs", "its observations are not snapped to a discrete set here", "full-sight LBF")

    # ----- LCA hooks (see the module docstring) -----
    def agent_roles(self):
        """One role name per agent; agents with the same role are interchangeable (may share a potential)."""
        raise MissingEnvHook(self, "agent_roles")

    def obs_schema(self):
        """List of envs.description.Field covering get_obs_agent(i) exactly once, ego first, identity flagged."""
        raise MissingEnvHook(self, "obs_schema")

    def describe_agent_view(self, state, agent_id):
        """The state told from agent_id's side (ego, then teammates), for LCA's prompts."""
        raise MissingEnvHook(self, "describe_agent_view")

    def task_dependencies(self):
        """Who must do what before whom, in words, for LCA's task-dependence prompt; "" when the task has none."""
        return ""

    def pair_oracle(self, state, actions, next_state, agent_id):
        """"better" | "worse" | "equal": the rule-based ranking of agent_id's action in state -> next_state."""
        raise MissingEnvHook(self, "pair_oracle")

    def oracle_actions(self, state=None):
        """A greedy joint action (int64 [n_agents]) following the env's pair_oracle rule."""
        raise MissingEnvHook(self, "oracle_actions")

    def get_env_info(self):
        return {
            "state_shape": self.get_state_size(),
            "obs_shape": self.get_obs_size(),
            "n_actions": self.get_total_actions(),
            "n_agents": self.n_agents,
            "episode_limit": self.episode_limit,
        }
