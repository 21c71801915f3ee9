"""SMAC / SMACv2 wrapper: imports and fails clearly without StarCraft II; the self-description arithmetic.

StarCraft II and the smac/smacv2 packages are not installable here, so the wrapper's game path
cannot run in CI. What is tested: the module imports without them, construction names what is
missing (package, wrong PyPI 'smac', StarCraft II, maps) and the smax alternative, SMAC's step
outcome is translated to pymarl's truncation semantics, and the state schema arithmetic.
"""
import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from envs import make_env
from envs.description import check_schema
from envs.smac import SC2Unavailable, SMACEnv, SMACv2Env, find_sc2, translate_step
from utils.config import load_yaml

HAS_SMAC = importlib.util.find_spec("smac") is not None
HAS_SMACV2 = importlib.util.find_spec("smacv2") is not None


def test_module_imports_without_starcraft():
    code = "import sys; import envs.smac; assert 'smac' not in sys.modules and 'pysc2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="src")


@pytest.mark.skipif(HAS_SMAC, reason="a 'smac' package is installed here")
def test_missing_smac_names_the_git_package_starcraft_and_smax():
    with pytest.raises(SC2Unavailable) as e:
        make_env("sc2", **load_yaml("envs", "sc2")["env_args"], seed=0)
    msg = str(e.value)
    for part in ("pip install git+https://github.com/oxwhirl/smac.git", "SMAC3", "./install_sc2.sh", "SC2PATH",
                 "--env-config=smax"):
        assert part in msg


@pytest.mark.skipif(HAS_SMACV2, reason="smacv2 is installed here")
def test_missing_smacv2_names_its_git_package():
    with pytest.raises(SC2Unavailable, match=r"git\+https://github.com/oxwhirl/smacv2.git.*install_sc2.sh"):
        make_env("sc2v2", **load_yaml("envs", "sc2v2")["env_args"], seed=0)
    with pytest.raises(ValueError, match="capability_config"):
        SMACv2Env(map_name="10gen_protoss")


@pytest.mark.skipif(HAS_SMAC, reason="a 'smac' package is installed here")
def test_pypi_smac3_is_not_mistaken_for_smac(tmp_path, monkeypatch):
    # a stand-in for PyPI's 'smac' (SMAC3): a top-level package without the 'env' subpackage
    (tmp_path / "smac").mkdir()
    (tmp_path / "smac" / "__init__.py").write_text('__version__ = "2.4.1"  # SMAC3 stand-in\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(SC2Unavailable, match="not the StarCraft Multi-Agent Challenge.*pip uninstall smac"):
            SMACEnv(map_name="3m")
    finally:
        sys.modules.pop("smac", None)


def test_starcraft_binary_and_maps_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/StarCraftII, pysc2's default place
    with pytest.raises(SC2Unavailable, match="SC2PATH is not set.*install_sc2.sh"):
        find_sc2({})
    sc2 = tmp_path / "StarCraftII"
    with pytest.raises(SC2Unavailable, match="not installed at SC2PATH=.*install_sc2.sh.*--env-config=smax"):
        find_sc2({"SC2PATH": str(sc2)})
    (sc2 / "Versions").mkdir(parents=True)
    with pytest.raises(SC2Unavailable, match="SMAC maps are missing"):
        find_sc2({"SC2PATH": str(sc2)})
    (sc2 / "Maps" / "SMAC_Maps").mkdir(parents=True)
    assert find_sc2({"SC2PATH": str(sc2)}) == str(sc2)


def test_time_out_is_a_truncation_and_a_battle_end_a_terminal():
    # SMAC at its limit: terminated=True, no episode_limit (continuing_episode=False), timeouts += 1
    assert translate_step(0.5, True, {"battle_won": False, "dead_allies": 1, "dead_enemies": 2}, True) == (
        0.5, False, {"battle_won": False, "dead_allies": 1, "dead_enemies": 2, "episode_limit": True})
    # continuing_episode=True flags it itself
    assert translate_step(0.0, True, {"battle_won": False, "episode_limit": True}, True)[1:] == (
        False, {"battle_won": False, "episode_limit": True})
    assert translate_step(20.0, True, {"battle_won": True, "dead_allies": 0, "dead_enemies": 3}, False) == (
        20.0, True, {"battle_won": True, "dead_allies": 0, "dead_enemies": 3})
    # after an SC2 crash SMAC restarts the game and returns (0, True, {})
    assert translate_step(0, True, {}, False) == (0.0, True, {"battle_won": False})
    assert translate_step(1, False, {"battle_won": False, "note": "text"}, False) == (1.0, False, {"battle_won": False})


class FakeStarCraft2Env:
    """NOT StarCraft II: a stand-in for the missing game binary, used ONLY for the schema arithmetic.

    It holds the attributes SMAC's StarCraft2Env sets from its map parameters and flags
    (oxwhirl/smac starcraft2.py: shield bits from the races, unit_type_bits, n_actions = 6 + n_enemies
    or + n_agents for SMACv2 Medivac maps, ...) and its get_state_size() formula.
    """

    def __init__(self, map_name, n_agents, n_enemies, races, unit_type_bits, map_type, limit, state_last_action=True,
                 state_timestep_number=False, stochastic_attack=False, stochastic_health=False, conic_fov=False,
                 n_fov_actions=0):
        self.map_name, self.n_agents, self.n_enemies, self.episode_limit = map_name, n_agents, n_enemies, limit
        self._agent_race, self._bot_race = races
        self.shield_bits_ally = int(races[0] == "P")
        self.shield_bits_enemy = int(races[1] == "P")
        self.unit_type_bits, self.map_type = unit_type_bits, map_type
        self.state_last_action, self.state_timestep_number = state_last_action, state_timestep_number
        self.obs_instead_of_state = False
        self.stochastic_attack, self.stochastic_health, self.conic_fov = stochastic_attack, stochastic_health, conic_fov
        self.n_fov_actions = n_fov_actions
        self.n_actions_no_attack = 6 + n_fov_actions
        medivacs_heal_more = map_type in ("MMM", "terran_gen") and n_agents > n_enemies and n_fov_actions
        self.n_actions = self.n_actions_no_attack + (n_agents if medivacs_heal_more else n_enemies)
        self.difficulty, self._step_mul, self._move_amount, self.timeouts = "7", 8, 2, 0
        self.reward_sparse, self.reward_only_positive, self.reward_scale = False, True, True
        self.reward_death_value, self.reward_win, self.reward_defeat = 10, 200, 0
        self.reward_negative_scale, self.reward_scale_rate = 0.5, 20

    def get_state_size(self):
        nf_al = (4 + self.shield_bits_ally + self.unit_type_bits + self.stochastic_attack + self.stochastic_health
                 + 2 * self.conic_fov)
        nf_en = 3 + self.shield_bits_enemy + self.unit_type_bits
        size = self.n_agents * nf_al + self.n_enemies * nf_en
        return size + self.state_last_action * self.n_agents * self.n_actions + self.state_timestep_number

    def get_obs_size(self):
        return 1

    def get_total_actions(self):
        return self.n_actions


MAPS = {  # SMAC map parameters (smac_maps.py) and the state sizes pymarl reports for them
    "3m": (dict(n_agents=3, n_enemies=3, races="TT", unit_type_bits=0, map_type="marines", limit=60), 48),
    "2s3z": (dict(n_agents=5, n_enemies=5, races="PP", unit_type_bits=2, map_type="stalkers_and_zealots",
                  limit=120), 120),
    "MMM": (dict(n_agents=10, n_enemies=10, races="TT", unit_type_bits=3, map_type="MMM", limit=150), 290),
    "27m_vs_30m": (dict(n_agents=27, n_enemies=30, races="TT", unit_type_bits=0, map_type="marines", limit=180),
                   1170),
}


def fake(map_name, **flags):
    return FakeStarCraft2Env(map_name, **MAPS[map_name][0], **flags)


@pytest.mark.parametrize("map_name", MAPS)
def test_schema_tiles_the_published_state_sizes(map_name):
    env = SMACEnv.wrap(fake(map_name))
    assert env.get_state_size() == MAPS[map_name][1]
    check_schema(env.state_schema(), env.get_state_size())
    assert len(env.action_meanings()) == env.get_total_actions()


def test_schema_indices_follow_smac_get_state():
    env = SMACEnv.wrap(fake("2s3z"))
    f = {x.name: x for x in env.state_schema()}
    # per ally: health, cooldown, x, y, shield, 2 type bits (7); per enemy: health, x, y, shield, 2 bits (6)
    assert (f["ally_0.health"].start, f["ally_0.cooldown"].start, f["ally_0.position"].start) == (0, 1, 2)
    assert (f["ally_1.shield"].start, f["ally_1.unit_type"].start, f["ally_1.unit_type"].end) == (11, 12, 14)
    assert (f["enemy_0.health"].start, f["enemy_0.shield"].start, f["enemy_4.unit_type"].end) == (35, 38, 65)
    assert (f["ally_0.last_action"].start, f["ally_4.last_action"].end) == (65, 120)
    assert "(stalker, zealot)" in f["ally_0.unit_type"].meaning
    assert "(zealot, stalker)" in f["enemy_0.unit_type"].meaning  # SMAC's enemy bits are reversed on this map
    assert env.action_meanings()[:3] == ["no-op (only for dead agents, who have no other action)", "stop",
                                         "move north (+y, by 2)"]
    assert env.action_meanings()[10] == "attack enemy 4 (alive, within shooting range)"
    assert "+ 200 when the battle is won" in env.reward_description() and "about 20" in env.reward_description()
    assert "5 Protoss units" in env.task_summary() and "VeryHard" in env.task_summary()


def test_schema_options_timestep_no_last_action_and_smacv2_capabilities():
    env = SMACEnv.wrap(fake("3m", state_last_action=False, state_timestep_number=True))
    fields = env.state_schema()
    check_schema(fields, env.get_state_size())
    assert [x.name for x in fields][-1] == "timestep" and env.get_state_size() == 3 * 4 + 3 * 3 + 1

    v2 = FakeStarCraft2Env("10gen_protoss", 5, 5, "PP", 3, "protoss_gen", 200, stochastic_attack=True,
                           stochastic_health=True, conic_fov=True, n_fov_actions=12)
    env = SMACv2Env.wrap(v2)
    f = {x.name: x for x in env.state_schema()}
    check_schema(list(f.values()), env.get_state_size())
    # smacv2 get_state_dict order: health, cooldown, x, y, shield, attack prob, health level, fov (2), type bits
    names = [x.name for x in env.state_schema() if x.name.startswith("ally_0.")][:-1]  # last: its last action
    assert names == ["ally_0.health", "ally_0.cooldown", "ally_0.position", "ally_0.shield",
                     "ally_0.attack_probability", "ally_0.health_level", "ally_0.fov_direction", "ally_0.unit_type"]
    assert f["ally_1.health"].start == 4 + 1 + 1 + 1 + 2 + 3  # 4: health, cooldown, x, y
    assert "(stalker, zealot, colossus)" in f["enemy_0.unit_type"].meaning
    assert env.action_meanings()[6] == "turn the field-of-view cone to 0 degrees"
    assert len(env.action_meanings()) == 6 + 12 + 5


def test_schema_refuses_a_layout_it_does_not_know():
    class Bigger(FakeStarCraft2Env):
        def get_state_size(self):
            return super().get_state_size() + 1

    with pytest.raises(NotImplementedError, match="does not follow the SMAC layout"):
        SMACEnv.wrap(Bigger("3m", **MAPS["3m"][0])).state_schema()


class LaunchingStarCraft2Env(FakeStarCraft2Env):
    """NOT StarCraft II: its _launch starts a child process (`sleep`) as StarCraft2Env._launch starts the game
    (pysc2's subprocess.Popen, from the thread that calls reset)."""

    def _launch(self):
        self._sc2_proc = subprocess.Popen(["sleep", "60"])


def sigint_blocked_in(pid):
    with open(f"/proc/{pid}/status") as f:
        blocked = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
    return bool(blocked & (1 << (signal.SIGINT - 1)))


def survives_sigint(proc):
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_starcraft_is_launched_with_sigint_blocked():
    """A terminal's Ctrl-C signals the whole process group: the game the env launches from the run's main process
    (its first reset, a full restart) must not die of it, so that the training loop stops at its safe point. Under a
    Python SIGINT handler (the run's: exec resets it to the default, which terminates), a child launched unwrapped
    dies of SIGINT; one launched by the wrapped env keeps it blocked, and the caller's mask is left as it was."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        plain = LaunchingStarCraft2Env("3m", **MAPS["3m"][0])
        plain._launch()
        assert not sigint_blocked_in(plain._sc2_proc.pid) and not survives_sigint(plain._sc2_proc)
        env = SMACEnv.wrap(LaunchingStarCraft2Env("3m", **MAPS["3m"][0]))
        SMACEnv.wrap(env._sc2)  # wrapping again does not stack the wrapper
        env._sc2._launch()  # what SMAC's reset and full_restart call
        proc = env._sc2._sc2_proc
        try:
            assert sigint_blocked_in(proc.pid) and survives_sigint(proc)
        finally:
            proc.kill()
            proc.wait()
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        assert env._sc2._launch.__wrapped__.__func__ is LaunchingStarCraft2Env._launch
    finally:
        signal.signal(signal.SIGINT, previous)
