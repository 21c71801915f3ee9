"""Google Research Football (gfootball 2.10.2) behind pymarl's env API, as QLLM (paper 002) uses it.

The agents control `n_agents` players of the left team (our team, attacking the goal at x = +1); the
built-in AI plays everything else. When the agents control the whole team (3_vs_1: 4 agents,
pass_and_shoot: 3) agent i always plays player i, goalkeeper included; with fewer agents than players
(counterattack: 4 of 11) gfootball picks the controlled players and switches them during play, and each
agent's `active_player` one-hot says which player it moves.

Observations and state: each agent observes gfootball's `simple115v2` vector (115 floats; layout in
`block_schema`, read from gfootball's `Simple115StateWrapper`). As in QLLM's GRF task prompt, the global
state is the agents' observations concatenated (n_agents x 115). The blocks differ only in the
active-player one-hot: each one holds the whole game.

QLLM's prompt is inaccurate about this layout; our schema states what the vector really holds.
simple115v2 always reserves 11 player slots per team (missing players are -1), so in 3_vs_1 indices 0-21
are our 11 position slots (4 real: goalkeeper 0, attackers 1-3), 22-43 their movements, 44-65 / 66-87 the
opponents' positions / movements (2 real players), not "0-7: positions of our 4 players". 97-107 are not
"invalid information" (nor an agent ID): they are the one-hot of the player this agent controls, in every
scenario, and 108-114 the one-hot of the game mode. Its "goal reward with a bonus growing with the shot
distance" is gfootball's checkpoint reward paying the uncollected checkpoints at a goal.

Episode ends: gfootball's `done` in academy scenarios (goal, ball out of play, possession lost) is a real
terminal. The time limit (`time_limit` steps, 150 in pymarl2's GRF setup that QLLM used) is a truncation:
`terminated=False, info["episode_limit"]=True`; so is gfootball's own end of the match after the scenario's
`game_duration` (400 steps in the academy), which caps `episode_limit`.

Rewards: gfootball gives every controlled player the scoring reward (+1 our goal, -1 theirs) and, with
"checkpoints", a per-agent progress bonus (see `reward_description`). The team reward is the sum over agents
(pymarl2's GRF wrapper, used for QLLM's GRF runs, returns `sum(rewards)`) or the mean, per
`reward_scalarisation`; with the sum a goal counts n_agents times. `info["goal"]` is 1 once our team has
scored in the episode (a win rate in the logs, like SMAC's battle_won); pymarl2's `score` flag counted any
positive reward, checkpoints included, as a win.

Seeding: gfootball seeds its engine each episode from Python's global `random`. We draw each episode's
`game_engine_random_seed` from our own generator (seeded by `seed`) instead; the engine is deterministic
given that seed, so an env built with the same seed replays identical episodes for identical actions.
"""
import warnings

import numpy as np

from envs.description import Field
from envs.multiagentenv import EnvValueError, MultiAgentEnv, reject_unknown_args
from envs.rng import generator_state, make_generator

try:
    import gfootball.env as football_env
    from gfootball.env import config as football_config
    from gfootball.env import football_action_set, scenario_builder
except ImportError as e:  # the module stays importable; constructing the env explains how to install
    football_env = None
    _IMPORT_ERROR = e

INSTALL_HINT = ("gfootball is not installed: run ./install_gfootball.sh (apt packages + a ~7.5 min engine "
                "compile into .venv; VENV=/path/to/venv ./install_gfootball.sh for another venv)")


def gfootball_missing(error):
    """The error constructing the env raises when `import gfootball.env` raised `error`: how to install it, caused by
    `error`."""
    missing = ImportError(INSTALL_HINT)
    missing.__cause__ = error  # as `raise ... from error`
    return missing

# QLLM's Table 3 (paper 002): agents per GRF task; the goalkeeper counts as an agent where all our players
# are controlled. counterattack_hard follows pymarl2's default; run_pass_and_shoot mirrors pass_and_shoot.
DEFAULT_N_AGENTS = {
    "academy_3_vs_1_with_keeper": 4,
    "academy_counterattack_easy": 4,
    "academy_counterattack_hard": 4,
    "academy_pass_and_shoot_with_keeper": 3,
    "academy_run_pass_and_shoot_with_keeper": 3,
}

SCENARIO_SUMMARIES = {
    "academy_3_vs_1_with_keeper": (
        "Three of our attackers start at the edge of the opponents' box, one on each side and one in the "
        "centre with the ball facing a defender; the opponents have that defender and a goalkeeper."),
    "academy_counterattack_easy": (
        "A counter-attack in a full 11-versus-11 game: our attackers near the halfway line break against a "
        "single defender and the goalkeeper; all other players of both teams run back towards the ball."),
    "academy_pass_and_shoot_with_keeper": (
        "Two of our attackers at the edge of the box: one on the side with the ball next to a defender, the "
        "other unmarked in the centre facing the goalkeeper."),
}

REWARD_OPTIONS = ("scoring", "scoring,checkpoints")
GAME_MODES = ("normal play", "kick-off", "goal kick", "free kick", "corner", "throw-in", "penalty")
ROLES = ("goalkeeper", "centre back", "left back", "right back", "defensive midfielder", "central midfielder",
         "left midfielder", "right midfielder", "attacking midfielder", "centre forward")
OBS_SIZE = 115
N_SLOTS = 11  # simple115v2 reserves 11 player slots per team
N_CHECKPOINTS, CHECKPOINT_REWARD = 10, 0.1  # gfootball's CheckpointRewardWrapper constants

_FRAME = ("pitch coordinates normalised by gfootball: x from -1 (our goal line) to +1 (the opponents' goal "
          "line, goal mouth y in [-0.044, 0.044]), y from -0.42 (top touchline) to +0.42 (bottom touchline), "
          "slightly beyond these lines off the pitch; 1 unit of x is 54.4 m, 1 unit of y is 83.6 m")
_DIRECTION = "displacement per env step (0.1 s of game time) in the same normalised units"


def _valid_kwargs():
    return ("scenario", "n_agents", "time_limit", "rewards", "seed", "common_reward", "reward_scalarisation")


def all_scenarios():
    return sorted(s for s in scenario_builder.all_scenarios() if not s.startswith("test"))


class FootballEnv(MultiAgentEnv):
    VALID_ARGS = _valid_kwargs()

    def __init__(self, scenario="academy_3_vs_1_with_keeper", n_agents=None, time_limit=150,
                 rewards="scoring,checkpoints", seed=None, common_reward=True, reward_scalarisation="sum", **kwargs):
        reject_unknown_args("gfootball", kwargs, _valid_kwargs())
        if football_env is None:
            raise gfootball_missing(_IMPORT_ERROR)
        scenarios = all_scenarios()
        if scenario not in scenarios:
            raise EnvValueError(f"gfootball: unknown scenario {scenario!r}; valid scenarios: {', '.join(scenarios)}")
        if rewards not in REWARD_OPTIONS:
            raise EnvValueError(f"gfootball: rewards must be one of {REWARD_OPTIONS}, got {rewards!r}")
        self.set_reward_settings("gfootball", common_reward, reward_scalarisation)
        if time_limit is None or int(time_limit) < 1:
            raise EnvValueError(f"gfootball: time_limit must be a positive number of steps, got {time_limit!r}")

        scenario_cfg = football_config.Config({"level": scenario, "game_engine_random_seed": 0}).ScenarioConfig()
        n_left = len(scenario_cfg.left_team)
        if n_agents is None:
            n_agents = DEFAULT_N_AGENTS.get(scenario, n_left)
        if not 1 <= int(n_agents) <= n_left:
            raise EnvValueError(f"gfootball: n_agents must be 1..{n_left} (the left team of {scenario!r}), "
                             f"got {n_agents!r}")
        self.scenario = scenario
        self.n_agents = int(n_agents)
        self.rewards = rewards
        self.game_duration = int(scenario_cfg.game_duration)
        self.episode_limit = min(int(time_limit), self.game_duration)

        self._rng = np.random.default_rng(seed)
        with warnings.catch_warnings():  # gym 0.25 warns about the old step API gfootball uses, once per wrapper
            warnings.simplefilter("ignore", DeprecationWarning)
            self._env = football_env.create_environment(
                env_name=scenario, representation="simple115v2", rewards=rewards,
                number_of_left_players_agent_controls=self.n_agents,
                # engine seed of the construction-time scenario (it also fixes gfootball's team processing order)
                other_config_options={"game_engine_random_seed": self._episode_seed()})
        self._game = self._env.unwrapped  # gfootball's FootballEnv: raw observations, config
        self.n_actions = len(football_action_set.get_action_set(self._game._config))
        self._avail = [[1] * self.n_actions for _ in range(self.n_agents)]
        raw = self._game.observation()[0]
        self._n_left, self._n_right = len(raw["left_team"]), len(raw["right_team"])
        self._left_roles = [int(r) for r in raw["left_team_roles"]]
        self._right_roles = [int(r) for r in raw["right_team_roles"]]
        self._obs = np.zeros((self.n_agents, OBS_SIZE), dtype=np.float32)
        self._t = 0

    # --- episode ---
    def _episode_seed(self):
        return int(self._rng.integers(0, 2**31 - 1))

    def seed(self, seed=None):
        """Seed the next reset (later resets continue this generator)."""
        self._rng = np.random.default_rng(seed)

    def get_rng_state(self):
        """The generator of the engine's per-episode seeds (the engine is deterministic given its seed)."""
        return {"engine_seeds": generator_state(self._rng)}

    def set_rng_state(self, state):
        self._rng = make_generator(state["engine_seeds"])

    def reset(self):
        self._game._config["game_engine_random_seed"] = self._episode_seed()
        # one controlled player: gfootball's SingleAgentObservationWrapper drops the agent axis, so restore it
        self._obs = np.asarray(self._env.reset(), dtype=np.float32).reshape(self.n_agents, OBS_SIZE)
        self._t = 0
        return self.get_obs(), self.get_state()

    def step(self, actions):
        obs, rewards, done, env_info = self._env.step(np.asarray(actions).reshape(-1).tolist())
        self._obs = np.asarray(obs, dtype=np.float32).reshape(self.n_agents, OBS_SIZE)
        self._t += 1
        score_reward = int(env_info["score_reward"])
        raw = self._game.observation()[0]
        info = {"score_reward": score_reward, "goal": int(raw["score"][0] > 0)}
        # gfootball also ends the match after game_duration steps: a time limit, not a terminal
        match_over = done and raw["steps_left"] <= 0 and score_reward == 0
        terminated = bool(done) and not match_over
        if not terminated and (match_over or self._t >= self.episode_limit):
            info["episode_limit"] = True
        return self.scalarise_reward(np.atleast_1d(rewards)), terminated, info

    # --- observations / state ---
    def get_obs(self):
        return list(self._obs)

    def get_obs_agent(self, agent_id):
        return self._obs[agent_id]

    def get_obs_size(self):
        return OBS_SIZE

    def get_state(self):
        return self._obs.reshape(-1)

    def get_state_size(self):
        return self.n_agents * OBS_SIZE

    # --- actions ---
    def get_avail_actions(self):
        return [list(a) for a in self._avail]

    def get_avail_agent_actions(self, agent_id):
        return list(self._avail[agent_id])

    def get_total_actions(self):
        return self.n_actions

    # --- self-description ---
    def _team_text(self, roles, n_real, ours):
        who = "our (left) team" if ours else "the opponents (right team)"
        listed = ", ".join(f"{k} = {ROLES[r]}" for k, r in enumerate(roles))
        pad = f"; slots {n_real}..{N_SLOTS - 1} are -1 (no such player)" if n_real < N_SLOTS else ""
        return f"{who}, 11 slots of (x, y) pairs, slot k at [2k, 2k+1]: {listed}{pad}"

    def block_schema(self):
        """Fields of one agent's 115-vector (offsets 0..114)."""
        left = self._team_text(self._left_roles, self._n_left, True)
        right = self._team_text(self._right_roles, self._n_right, False)
        return [
            Field("left_team_positions", 0, 22, f"positions of {left}; {_FRAME}"),
            Field("left_team_directions", 22, 44, f"movement of the same players in the same slots, {_DIRECTION}; "
                                                  f"-1 for empty slots"),
            Field("right_team_positions", 44, 66, f"positions of {right}; same coordinates"),
            Field("right_team_directions", 66, 88, f"movement of the opponents, same slots, {_DIRECTION}; "
                                                   f"-1 for empty slots"),
            Field("ball_position", 88, 91, "ball (x, y, z): x and y in the normalised pitch coordinates, "
                                           "z = height above the grass in metres (about 0.11 when on the grass)"),
            Field("ball_direction", 91, 94, f"ball movement (dx, dy, dz), {_DIRECTION} (dz in metres per step)"),
            Field("ball_owner", 94, 97, "one-hot of who has the ball: [1,0,0] nobody (e.g. in flight), "
                                        "[0,1,0] our team, [0,0,1] the opponents"),
            Field("active_player", 97, 108, "one-hot over our 11 player slots: the player this agent controls now "
                                            "(all 0 if none); the built-in AI moves our other players"),
            Field("game_mode", 108, 115, "one-hot of the game mode: " + ", ".join(
                f"{k} = {m}" for k, m in enumerate(GAME_MODES))),
        ]

    def state_schema(self):
        """The agents' 115-blocks in agent order; only active_player differs between blocks."""
        fields = []
        for i in range(self.n_agents):
            base = i * OBS_SIZE
            for f in self.block_schema():
                meaning = f.meaning
                if i > 0 and f.name != "active_player":
                    meaning = f"same as agent_0.{f.name} (every agent observes the whole game: equal values)"
                fields.append(Field(f"agent_{i}.{f.name}", base + f.start, base + f.end, meaning))
        return fields

    def action_meanings(self):
        meanings = {
            "idle": "idle (no-op; sticky movement/sprint/dribble continue)",
            "left": "run left (towards our goal, -x; sticky)", "top_left": "run top-left (-x, -y; sticky)",
            "top": "run up (-y; sticky)", "top_right": "run top-right (+x, -y; sticky)",
            "right": "run right (towards the opponents' goal, +x; sticky)",
            "bottom_right": "run bottom-right (+x, +y; sticky)", "bottom": "run down (+y; sticky)",
            "bottom_left": "run bottom-left (-x, +y; sticky)",
            "long_pass": "long pass (receiver picked from the movement direction)",
            "high_pass": "high pass (receiver picked from the movement direction)",
            "short_pass": "short pass (receiver picked from the movement direction)",
            "shot": "shoot at the opponents' goal", "sprint": "start sprinting (sticky)",
            "release_direction": "stop moving (release the direction)", "release_sprint": "stop sprinting",
            "sliding": "sliding tackle (without the ball)", "dribble": "start dribbling (sticky, with the ball)",
            "release_dribble": "stop dribbling",
        }
        names = [str(a) for a in football_action_set.get_action_set(self._game._config)]
        return [meanings.get(n, n.replace("_", " ")) for n in names]

    def task_summary(self):
        what = SCENARIO_SUMMARIES.get(self.scenario, f"The gfootball scenario '{self.scenario}'.")
        roles = ", ".join(f"{k} = {ROLES[r]}" for k, r in enumerate(self._left_roles))
        return (f"Google Research Football, scenario {self.scenario}. {what} We are the left team and attack the "
                f"goal at x = +1 (centre (1, 0)); our players: {roles}. {self.n_agents} agents each control one of "
                f"our players (the player an agent controls is its active_player one-hot; the built-in AI "
                f"moves all other players). The episode ends when we score, the ball goes out of play or the "
                f"opponents win the ball, or after {self.episode_limit} steps.")

    def reward_description(self):
        mean = self.reward_scalarisation == "mean"
        how = self.reward_scalarisation
        scale = f"{self.n_agents}x" if not mean else "1x"
        text = (f"Team reward = {how} of the {self.n_agents} agents' rewards. Scoring: every agent gets +1 when our "
                f"team scores (-1 if the opponents score), so a goal adds {scale} 1 to the team reward.")
        if self.rewards == "scoring":
            return text
        return text + (
            f" Checkpoints (progress): with d = distance from the ball to the opponents' goal centre (1, 0) in "
            f"normalised units, there are {N_CHECKPOINTS} thresholds 0.99, 0.90, ..., 0.19 (0.99 - 0.8k/9, k = 0..9); "
            f"an agent gets +{CHECKPOINT_REWARD} for each threshold that d is at or below while the player it "
            f"controls has the ball, each threshold at most once per agent and episode (several at once when its "
            f"player gets the ball near the goal). When our team scores, each agent "
            f"also gets +{CHECKPOINT_REWARD} for each threshold it has not collected, so a farther shot earns more. "
            f"Each agent's episode total is therefore at most 2.0 (1 for the goal + 1.0 of checkpoints), exactly "
            f"2.0 whenever we score; the team's {how} is at most {2.0 * (self.n_agents if not mean else 1):g}.")

    def describe_state(self, state=None):
        """The game once (the blocks repeat it), then which player each agent controls."""
        state = self.get_state() if state is None else np.asarray(state)
        block = state[:OBS_SIZE]
        lines = []
        for name, start, roles in (("our", 0, self._left_roles), ("opponent", 44, self._right_roles)):
            for k, r in enumerate(roles):
                x, y = block[start + 2 * k: start + 2 * k + 2]
                dx, dy = block[start + 22 + 2 * k: start + 24 + 2 * k]
                lines.append(f"{name} player {k} ({ROLES[r]}): position ({x:.3f}, {y:.3f}), "
                             f"movement ({dx:.4f}, {dy:.4f})")
        bx, by, bz = block[88:91]
        owner = ("nobody", "our team", "the opponents")[int(np.argmax(block[94:97]))]
        lines.append(f"ball: position ({bx:.3f}, {by:.3f}), height {bz:.2f} m, movement "
                     f"({', '.join(f'{v:.4f}' for v in block[91:94])}), owned by {owner}")
        lines.append(f"game mode: {GAME_MODES[int(np.argmax(block[108:115]))]}")
        for i in range(len(state) // OBS_SIZE):
            active = state[i * OBS_SIZE + 97: i * OBS_SIZE + 108]
            lines.append(f"agent {i} controls our player {int(np.argmax(active))}" if active.any()
                         else f"agent {i} controls no player")
        return "\n".join(lines)

    # --- misc ---
    def get_stats(self):
        return {}

    def close(self):
        self._env.close()
