"""Football resumes exactly: a run resumed from its middle checkpoint ends with the same checkpoint as one never
stopped (the engine is deterministic given its per-episode seeds, whose generator the checkpoint keeps)."""
import glob
import os

from tests.run.test_resume import assert_same, load_all

from helpers import require_extra, run_main

require_extra("gfootball", "./install.sh football, or ./install_gfootball.sh")

SETTINGS = ["t_max=40", "env_args.time_limit=10", "test_nepisode=1", "test_interval=20", "log_interval=20",
            "runner_log_interval=20", "learner_log_interval=20", "save_model_interval=20", "batch_size=2",
            "buffer_size=8", "save_replay_buffer=True", "use_tensorboard=False", "runner=episode", "batch_size_run=1",
            "hidden_dim=8", "mixing_embed_dim=8", "hypernet_embed=8"]


def test_football_run_resumed_from_its_middle_checkpoint_ends_the_same(tmp_path, monkeypatch):
    from utils import checkpoint

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "drop_older_buffers", lambda path: [])
        run_main(tmp_path / "full", "qmix", "gfootball_3v1", *SETTINGS)
    (full,) = glob.glob(str(tmp_path / "full" / "models" / "*"))
    steps = sorted(int(d) for d in os.listdir(full) if d.isdigit())
    run_main(tmp_path / "resumed", "qmix", "gfootball_3v1", *SETTINGS, f"checkpoint_path={full}",
             f"load_step={steps[1]}")
    (resumed,) = glob.glob(str(tmp_path / "resumed" / "models" / "*"))
    assert_same(load_all(os.path.join(full, str(steps[-1]))), load_all(os.path.join(resumed, str(steps[-1]))))
