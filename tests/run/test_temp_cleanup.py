"""A run starting deletes the temps that earlier runs left when killed mid-write, and no others."""
import os
import subprocess
import sys

import pytest

from helpers import run_main
from utils.files import process_start, temp_path


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_run_start_removes_dead_writers_temps_only(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    me = f"-{os.getpid()}-{process_start(os.getpid())}-"
    dead = temp_path(str(tmp_path / "models" / "old_run" / "305")).replace(me, f"-{proc.pid}-12345-")
    dead_json = temp_path(str(tmp_path / "sacred" / "qmix" / "penalty" / "1" / "info.json")).replace(
        me, f"-{proc.pid}-12345-")
    live = temp_path(str(tmp_path / "models" / "old_run" / "155"))  # this process: a live writer
    for folder in (dead, live):
        os.makedirs(folder)
        open(os.path.join(folder, "agent.th"), "w").close()
    os.makedirs(os.path.dirname(dead_json))
    open(dead_json, "w").close()
    run_main(tmp_path, "qmix", "matrix_game", "t_max=50", "env_args.episode_limit=5", "use_tensorboard=False",
             "save_model=False")
    assert not os.path.exists(dead) and not os.path.exists(dead_json)
    assert os.path.isfile(os.path.join(live, "agent.th"))
