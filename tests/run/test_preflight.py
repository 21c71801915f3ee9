"""render=True and save_replay=True are refused before the run where the env cannot honour them: the env's class
declares what its render() and save_replay() do (envs.multiagentenv.MultiAgentEnv.RENDERS, SAVES_REPLAYS)."""
import os
import sys

import pytest

from main import main
from run.preflight import check_env_outputs, has_display
from utils.config import ConfigError

LBF = {"env": "lbf", "env_args": {"key": "Foraging-8x8-2p-2f-coop-v3"}}


@pytest.mark.parametrize("config, evaluating, display, message", [
    ({"env": "matrix_game", "render": True}, False, True,
     "render=True: env matrix_game draws nothing (its render() shows no episode); leave render out"),
    ({**LBF, "render": True}, False, False,
     "render=True: env lbf (Foraging-8x8-2p-2f-coop-v3) draws in a window, and there is no display here (DISPLAY is "
     "not set: a headless machine, or ssh without X forwarding); leave render out, or run where a display is"),
    ({"env": "gymma", "env_args": {"key": "CartPole-v1"}, "render": True}, False, True,
     "render=True: env gymma (CartPole-v1) draws nothing"),
    ({"env": "mpe", "render": True}, False, True, "render=True: env mpe draws nothing"),
    ({"env": "matrix_game", "save_replay": True}, True, True,
     "save_replay=True: env matrix_game writes no replays (its save_replay() does nothing); leave save_replay out"),
    ({**LBF, "save_replay": True}, True, True, "save_replay=True: env lbf (Foraging-8x8-2p-2f-coop-v3) writes no"),
    ({"env": "sc2", "save_replay": True}, False, True,
     "save_replay=True saves a replay after an evaluation only: add evaluate=True checkpoint_path=results/models/"
     "<run>, or leave save_replay out"),
])
def test_what_the_env_cannot_honour_is_refused(config, evaluating, display, message):
    with pytest.raises(ConfigError) as e:
        check_env_outputs(config, evaluating, display)
    assert message in str(e.value)


@pytest.mark.parametrize("config, evaluating, display", [
    ({**LBF, "render": True}, False, True),  # a pyglet window
    ({"env": "gymma", "env_args": {"key": "lbforaging:Foraging-8x8-2p-2f-coop-v3"}, "render": True}, False, True),
    ({"env": "two_switch", "render": True}, False, False),  # text on the console: no display needed
    ({"env": "sc2", "render": True, "save_replay": True}, True, True),  # StarCraft II: a window, replays
    ({"env": "matrix_game", "render": False, "save_replay": False}, False, False),
])
def test_what_the_env_honours_passes(config, evaluating, display):
    check_env_outputs(config, evaluating, display)


def test_a_display_is_an_x_display():
    """LBF's pyglet opens X11 windows only: a Wayland session without XWayland (WAYLAND_DISPLAY alone) cannot show
    them; with XWayland, DISPLAY is set."""
    if not sys.platform.startswith("linux"):
        pytest.skip("other systems always have a display")
    assert not has_display({}) and not has_display({"DISPLAY": ""})
    assert not has_display({"WAYLAND_DISPLAY": "wayland-0"})
    assert has_display({"DISPLAY": ":0"}) and has_display({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})


@pytest.mark.parametrize("env, message", [
    ("lbf", "render=True: env lbf (Foraging-5x5-2p-1f-v3) draws in a window, and there is no display here"),
    ("matrix_game", "render=True: env matrix_game draws nothing"),
])
def test_render_on_a_headless_machine_fails_before_the_run(tmp_path, capsys, monkeypatch, env, message):
    """Headless LBF used to crash mid-run (pyglet's NoSuchDisplayException at the first test episode): now one line,
    exit status 2, no run folder."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")  # not enough for an X11 window
    argv = ["main.py", "--config=qmix", f"--env-config={env}", "with", f"local_results_path={tmp_path}",
            "render=True"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "sacred") and not os.path.exists(tmp_path / "tb_logs")
