"""run=offline refuses data and settings it cannot train on, and says so when training went wrong: no episodes, a
dataset changed under a resumed run, bad data found mid-run, non-finite updates skipped and validation losses."""
import os

from helpers import constant_climbing_episodes, make_ctx, run_main
from offline import DatasetWriter

LIMIT = 5
TINY = ["offline_steps=6", "offline_test_interval=3", "offline_log_interval=3", "offline_save_interval=3",
        "batch_size=4", "test_nepisode=2", f"env_args.episode_limit={LIMIT}", "hidden_dim=8"]


def write(path, arrays=None, n=8, **kw):
    """A climbing dataset of `arrays` (default: n episodes playing (0, 0), labelled expert)."""
    ctx = make_ctx("qmix", "climbing", env_args={"episode_limit": LIMIT})
    with DatasetWriter(str(path), ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args, vars(ctx.args)) as w:
        if arrays is None:
            arrays = constant_climbing_episodes(n, 0, 0, limit=LIMIT)
        if len(arrays["obs"]):
            w.add_arrays(arrays, qualities="expert", **kw)
    ctx.runner.close_env()
    return str(path)


def test_a_dataset_of_no_episodes_is_a_dataset_error(tmp_path, capsys):
    empty = write(tmp_path / "empty.h5", {k: v[:0] for k, v in constant_climbing_episodes(1, 0, 0, LIMIT).items()})
    data = write(tmp_path / "data.h5")
    run_main(tmp_path / "a", "bc", "climbing", *TINY, f"offline_dataset={empty}", expect=2)
    err = capsys.readouterr().err
    assert f"offline_dataset: {empty} holds no episodes" in err and "Traceback" not in err
    run_main(tmp_path / "b", "bc_beta", "climbing", *TINY, f"offline_dataset={data}", f"offline_expert={empty}",
             expect=2)
    assert f"offline_expert: {empty} holds no episodes" in capsys.readouterr().err


def test_a_valid_fraction_that_leaves_no_training_episode_is_a_config_error(tmp_path, capsys):
    data = write(tmp_path / "data.h5", n=4)
    run_main(tmp_path, "bc", "climbing", *TINY, f"offline_dataset={data}", "offline_valid_fraction=0.9", expect=2)
    err = capsys.readouterr().err
    assert ("nothing left to train on: offline_valid_fraction=0.9 holds out all 4 episodes; give a smaller "
            "offline_valid_fraction (at most 0.75 keeps one training episode)") in err
    assert "Traceback" not in err and not os.path.isdir(tmp_path / "sacred" / "bc")
