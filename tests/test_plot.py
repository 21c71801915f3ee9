"""scripts/plot.py and its selection rules (utils/runs.py, issue 12 item 8) on synthetic Sacred run folders."""
import json
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from plot import main, score_table
from utils.runs import aggregate, find_runs, format_score, group_runs

BASE = {"name": "qmix", "run": "online", "env": "matrix_game", "env_args": {"game": "penalty", "seed": 1},
        "lr": 0.0005, "evaluate": False, "local_results_path": "results", "t_max": 300, "use_tensorboard": True}


def write_run(root, alg, env, run_id, t, values, status="COMPLETED", heartbeat=None, **config):
    """A results/sacred/<alg>/<env>/<id>/ folder: config.json, run.json and info.json as Sacred writes them."""
    d = os.path.join(root, alg, env, str(run_id))
    os.makedirs(d)
    config = {**BASE, "name": alg, "seed": run_id, **config}
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    beat = heartbeat or datetime.now(timezone.utc).replace(tzinfo=None)
    json.dump({"status": status, "heartbeat": beat.isoformat()}, open(os.path.join(d, "run.json"), "w"))
    json.dump({"test_return_mean": values, "test_return_mean_T": t}, open(os.path.join(d, "info.json"), "w"))
    return d


@pytest.fixture
def sacred(tmp_path):
    root = str(tmp_path / "sacred")
    T = [0, 100, 200]
    write_run(root, "qmix", "penalty", 1, T, [0.0, 1.0, 2.0])
    write_run(root, "qmix", "penalty", 2, T, [0.0, 3.0, 4.0], env_args={"game": "penalty", "seed": 2},
              local_results_path="/elsewhere", t_max=1000, use_tensorboard=False)  # bookkeeping keys differ
    write_run(root, "qmix", "penalty", 3, T, [0.0, 5.0, 6.0], lr=0.001)  # another hyperparameter setting
    write_run(root, "qmix", "penalty", 4, T, [0.0, 7.0, 8.0], lr=0.001)
    write_run(root, "qmix", "penalty", 5, [200], [9.0], evaluate=True, checkpoint_path="results/models/x")
    write_run(root, "qmix", "penalty", 6, [0, 100], [0.0, 0.5], status="FAILED")
    write_run(root, "qmix", "penalty", 7, [0], [0.25], status="RUNNING")  # a one-point run, still going
    write_run(root, "qmix", "penalty", 8, [0, 100], [0.0, 1.0], status="RUNNING",  # died without saying so
              heartbeat=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=2))
    write_run(root, "bc", "penalty", 9, [0, 10, 20], [0.0, 2.0, 4.0], run="offline",
              offline_dataset="/data/penalty/expert.h5")
    write_run(root, "collect", "penalty", 10, [0], [1.0], run="collect")
    return root


def test_groups_and_counts(sacred):
    runs, skipped = find_runs(sacred, "test_return_mean")
    why = {os.path.basename(p): reason for p, reason in skipped}
    assert set(why) == {"5", "6", "8", "10"}
    assert "evaluate" in why["5"] and why["6"] == "FAILED" and "died" in why["8"] and "collect" in why["10"]
    groups = group_runs(runs)
    assert [(g.label, g.kind, sorted(int(os.path.basename(r.path)) for r in g.runs)) for g in groups] == [
        ("bc", "offline", [9]),
        ("qmix lr=0.0005", "online", [1, 2, 7]),
        ("qmix lr=0.001", "online", [3, 4]),
    ]
    assert groups[1].n_running == 1 and groups[2].n_running == 0
    # the curves span every run; the one-point run counts where it reaches
    grid, mean, std, n = aggregate(groups[1].runs)
    assert grid.tolist() == [0.0, 100.0, 200.0] and n.tolist() == [3, 2, 2]
    np.testing.assert_allclose(mean, [0.25 / 3, 2.0, 3.0])
    grid, mean, std, n = aggregate(groups[2].runs)
    assert n.tolist() == [2, 2, 2] and mean.tolist() == [0.0, 6.0, 7.0] and std.tolist() == [0.0, 1.0, 1.0]


def test_curves_are_not_cut_to_the_shortest_run(tmp_path):
    root = str(tmp_path)
    write_run(root, "qmix", "penalty", 1, [0, 100, 200, 300, 400], [0.0, 1.0, 2.0, 3.0, 4.0])
    write_run(root, "qmix", "penalty", 2, [0, 110, 220], [0.0, 3.0, 6.0])
    [group] = group_runs(find_runs(root, "test_return_mean")[0])
    grid, mean, std, n = aggregate(group.runs, points=5)
    assert grid.tolist() == [0.0, 100.0, 200.0, 300.0, 400.0]
    assert n.tolist() == [2, 2, 2, 1, 1]  # run 2 reaches 220 (+ half its logging interval), not 300
    np.testing.assert_allclose(mean, [0.0, (1 + 300 / 110) / 2, (2 + 3 + 270 / 110) / 2, 3.0, 4.0])
    assert std[-1] == 0


def test_labels_name_the_differing_keys_and_name_labels_a_group(tmp_path):
    root = str(tmp_path)
    write_run(root, "qllm", "spread", 1, [0, 1], [0.0, 1.0], tfcaf_path="/x/tfcafs/my_tfcaf.py")
    write_run(root, "qllm", "spread", 2, [0, 1], [0.0, 1.0], tfcaf_path=None)
    write_run(root, "qllm_big", "spread", 3, [0, 1], [0.0, 1.0], hidden_dim=128)  # with name=qllm_big
    labels = [g.label for g in group_runs(find_runs(root, "test_return_mean")[0])]
    assert labels == ["qllm tfcaf=my_tfcaf.py", "qllm tfcaf=null", "qllm_big"]
    # keys the user declares irrelevant do not split groups
    assert [g.label for g in group_runs(find_runs(root, "test_return_mean")[0], ignore={"tfcaf_path"})] == [
        "qllm", "qllm_big"]


def test_one_seed_shows_no_spread():
    assert format_score([1.0]) == "1.000 (n=1)"
    assert format_score([1.0, 3.0]) == "2.000 ± 1.000 (n=2)"


def test_command_writes_png_and_prints_table(sacred, tmp_path, capsys):
    out = tmp_path / "curves.png"
    main([sacred, "--out", str(out)])
    assert out.stat().st_size > 1000 and open(out, "rb").read(4) == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| bc | penalty | gradient steps | 1 | 4.000 (n=1) | 20 |" in printed
    assert "| qmix lr=0.001 | penalty | env steps | 2 | 7.000 ± 1.000 (n=2) | 200 |" in printed
    assert "| qmix lr=0.0005 | penalty | env steps | 2 (+1 running, not scored) |" in printed
    assert "± 0.000" not in printed and "skipped " in printed and "1 × FAILED" in printed


def test_table_of_one_run(tmp_path):
    write_run(str(tmp_path), "qmix", "climbing", 1, [0, 50], [1.0, 4.0])
    groups = group_runs(find_runs(str(tmp_path), "test_return_mean")[0])
    assert "| qmix | climbing | env steps | 1 | 4.000 (n=1) | 50 |" in score_table(groups, "test_return_mean")


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no runs with 'test_return_mean'"):
        main([str(tmp_path)])
    write_run(str(tmp_path), "qmix", "climbing", 1, [0, 50], [1.0, 4.0], status="FAILED")
    with pytest.raises(SystemExit, match="1 × FAILED"):
        main([str(tmp_path)])


def resumed(d, previous, step):
    """Mark run folder `d` as resumed from the checkpoint at `step` that the Sacred run `previous` saved."""
    info = json.load(open(os.path.join(d, "info.json")))
    info["resumed_from"] = {"checkpoint": f"/models/run/{step}", "step": step,
                            "sacred_run": {"id": os.path.basename(previous), "dir": previous}}
    json.dump(info, open(os.path.join(d, "info.json"), "w"))


def test_a_resumed_run_is_one_seed_with_its_segments_chained(tmp_path, capsys):
    root = str(tmp_path / "sacred")
    # killed at 300 (RUNNING, fresh heartbeat), its last checkpoint at 200; resumed from it; resumed again to 600
    first = write_run(root, "qmix", "climbing", 1, [0, 100, 200, 300], [0.0, 1.0, 2.0, 9.0], status="RUNNING")
    second = write_run(root, "qmix", "climbing", 2, [250, 350], [2.5, 3.5], status="INTERRUPTED", seed=1)
    resumed(second, first, 200)
    third = write_run(root, "qmix", "climbing", 3, [350, 450, 550], [3.6, 4.5, 5.5], seed=1)
    resumed(third, second, 340)
    other = write_run(root, "qmix", "climbing", 4, [0, 100], [0.0, 7.0], seed=2)
    runs, skipped = find_runs(root, "test_return_mean")
    assert sorted(os.path.basename(r.path) for r in runs) == ["3", "4"] and not skipped
    chained = next(r for r in runs if r.segments)
    assert chained.segments == (first, second) and not chained.running
    # the killed segment's 300 (after its checkpoint) and the second's 350 (the third logged it again) are dropped
    assert chained.T.tolist() == [0, 100, 200, 250, 350, 450, 550]
    assert chained.values.tolist() == [0.0, 1.0, 2.0, 2.5, 3.6, 4.5, 5.5]
    groups = group_runs(runs)
    assert len(groups) == 1 and len(groups[0].runs) == 2
    main([root, "--out", str(tmp_path / "p")])
    printed = capsys.readouterr().out
    assert "| qmix | climbing | env steps | 2 |" in printed and "(n=2)" in printed
    assert "1 resumed run(s) chained" in printed and f"{third} <- {second} <- {first}" in printed
    # the same through sources.load (results.py, a sweep's trial), the segments given too, and the folder moved
    from analysis.sources import load

    runs, _ = load([third, first, other], "test_return_mean")
    assert sorted(os.path.basename(r.path) for r in runs) == ["3", "4"]
    moved = str(tmp_path / "moved")
    os.rename(root, moved)
    runs, skipped = find_runs(moved, "test_return_mean")
    assert [len(r.segments) for r in sorted(runs, key=lambda r: r.path)] == [2, 0] and not skipped


def test_a_branch_off_an_earlier_checkpoint_is_a_run_of_its_own(tmp_path):
    """A resume with load_step (or into a locked folder) continues in a new model folder: the run it left stays a
    run, the branch is another (review finding: chaining it made the original vanish)."""
    root = str(tmp_path / "sacred")
    first = write_run(root, "qmix", "climbing", 1, [0, 100, 200], [0.0, 1.0, 2.0])
    branch = write_run(root, "qmix", "climbing", 2, [150, 250], [1.5, 2.5], seed=1)
    resumed(branch, first, 100)
    info = json.load(open(os.path.join(branch, "info.json")))
    info["resumed_from"]["same_model_dir"] = False
    json.dump(info, open(os.path.join(branch, "info.json"), "w"))
    runs, skipped = find_runs(root, "test_return_mean")
    assert sorted(os.path.basename(r.path) for r in runs) == ["1", "2"] and not any(r.segments for r in runs)


@pytest.mark.parametrize("out, written", [("pp/", ["pp/test_return_mean.png", "pp/test_return_mean.pdf"]),
                                          ("fig", ["fig.png", "fig.pdf"]), ("fig.png", ["fig.png", "fig.pdf"]),
                                          ("fig.pdf", ["fig.png", "fig.pdf"])])
def test_out_is_a_folder_or_a_stem(sacred, tmp_path, capsys, monkeypatch, out, written):
    monkeypatch.chdir(tmp_path)
    main([sacred, "--out", out])
    paths = [str(tmp_path / w) for w in written]
    assert all(os.path.isfile(p) for p in paths)
    assert capsys.readouterr().out.strip().splitlines()[-1] == "wrote " + ", ".join(paths)
    assert sorted(os.listdir(tmp_path / os.path.dirname(written[0]))) == sorted(
        [os.path.basename(w) for w in written] + (["sacred"] if "/" not in written[0] else []))
