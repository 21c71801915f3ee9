"""What a run prints is true: the summary at a log interval holds the latest logged values (those info.json holds),
the final evaluation is printed, offline runs count gradient steps and samples, and cout.txt holds the console log."""
import json
import logging
import os
import re

import pytest

from helpers import run_main, sacred_dir, write_random_dataset

TINY = ["t_max=300", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=50", "log_interval=50",
        "runner_log_interval=50", "learner_log_interval=50", "save_model=False", "batch_size=4", "buffer_size=8",
        "epsilon_anneal_time=400", "use_tensorboard=False"]
HEADER = re.compile(r"Recent Stats \| (t_env|gradient step): +(\d+) \| ([^:|]+): +(\d+)")
CELL = re.compile(r"([A-Za-z_0-9]+): +(-?[0-9.e+-]+|nan|inf|-inf)(?=\t|$)")


def summaries(text):
    """[(step label, step, count label, count, {stat: printed latest value})] of the console's summaries."""
    out, current = [], None
    for line in text.splitlines():
        m = HEADER.search(line)
        if m:
            current = (m.group(1), int(m.group(2)), m.group(3).strip(), int(m.group(4)), {})
            out.append(current)
            section = "latest"
        elif current is None:
            continue
        elif line.startswith("latest values:"):
            section = "latest"
        elif line.startswith("mean over this interval"):
            section = "mean"
        elif line.startswith("["):  # the next log line ends the summary
            current = None
        elif section == "latest":
            current[4].update({k: float(v) for k, v in CELL.findall(line)})
    return out


def latest_logged(info, key, step):
    values = [v for v, t in zip(info[key], info[f"{key}_T"]) if t <= step]
    return values[-1] if values else None


def test_online_summaries_show_the_latest_logged_values_and_cout_holds_the_console(tmp_path, capsys):
    run_main(tmp_path, "qmix", "matrix_game", *TINY)
    err = capsys.readouterr().err
    run_dir = sacred_dir(tmp_path, "qmix", "penalty")
    info = json.load(open(os.path.join(run_dir, "info.json")))

    printed = summaries(err)
    assert [s[1] for s in printed] == [5, 55, 105, 155, 205, 255, 305]  # from the first episode, every interval
    for label, step, count_label, count, stats in printed:
        assert (label, count_label) == ("t_env", "Episode")
        assert count == latest_logged(info, "episode", step)
        # every stat logged so far is shown, with its latest value (the one logged at this step where there is one)
        assert set(stats) == {k for k in info if f"{k}_T" in info and k != "episode" and info[f"{k}_T"][0] <= step}
        for key, value in stats.items():
            assert abs(value - latest_logged(info, key, step)) <= 1e-4 * max(1.0, abs(value)), (step, key)
    # the runner's and the test's stats of a summary are those of its step, not an interval before
    for _, step, *_ in printed:
        assert step in info["epsilon_T"] and step in info["test_return_mean_T"]
    assert printed[-1][4]["epsilon"] < 1.0

    # the final evaluation is printed: the last test ran in the last iteration (t_env 305), so it is the end's
    final = [line for line in err.splitlines() if "Final evaluation" in line]
    assert len(final) == 1 and "Latest evaluation" not in err
    assert f"(t_env {info['test_return_mean_T'][-1]}, 2 greedy episodes)" in final[0]
    assert f"test_return_mean {info['test_return_mean'][-1]:.4f}" in final[0]

    # cout.txt: the whole console log of the run, from its start to its last line
    cout = open(os.path.join(run_dir, "cout.txt")).read()
    lines = [line for line in err.splitlines() if line.startswith("[")]
    own = [line for line in lines if "pymarl.my_main" in line]
    assert own and all(line in cout for line in own)
    assert "Recent Stats" in cout and "Final evaluation" in cout and "Experiment parameters" in cout
    assert summaries(cout) == printed
    assert "\r" not in cout  # no progress bar redraws (stderr is no terminal here, and bars never go to cout)


def test_a_last_evaluation_before_the_end_is_not_called_final_and_sampled_tests_say_so(tmp_path, capsys):
    """test_interval 200 over 300 steps: the one test ran at t_env ~200, so the closing line names it the latest
    evaluation and says where the run ended; test_greedy=False episodes are named sampled, not greedy."""
    tiny = [s for s in TINY if not s.startswith(("test_interval=", "epsilon_anneal_time=", "buffer_size="))]
    run_main(tmp_path, "ippo", "matrix_game", *tiny, "test_interval=200", "test_greedy=False")
    err = capsys.readouterr().err
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "ippo", "penalty"), "info.json")))
    (line,) = [x for x in err.splitlines() if "evaluation (" in x]
    step, end = info["test_return_mean_T"][-1], int(re.search(r"Finished training: (\d+) env steps", err).group(1))
    assert 200 <= step < end
    title = f"Latest evaluation (the run ended at t_env {end}, less than the test interval 200 after it)"
    assert f"{title} (t_env {step}, " in line and "Final evaluation" not in err
    assert re.search(r", \d+ sampled episodes\): test_return_mean", line)


def test_offline_summaries_count_gradient_steps_and_samples(tmp_path, capsys):
    path, _ = write_random_dataset(tmp_path / "data.h5", "climbing", n_episodes=8, env_args={"episode_limit": 5})
    capsys.readouterr()
    run_main(tmp_path, "bc", "climbing", f"offline_dataset={path}", "offline_steps=6", "offline_test_interval=3",
             "offline_log_interval=3", "save_model=False", "batch_size=4", "test_nepisode=2",
             "env_args.episode_limit=5", "use_tensorboard=False")
    err = capsys.readouterr().err
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "bc", "climbing"), "info.json")))
    printed = summaries(err)
    assert [(s[0], s[1], s[2], s[3]) for s in printed] == [("gradient step", 3, "samples (episodes)", 12),
                                                           ("gradient step", 6, "samples (episodes)", 24)]
    assert "Episode:" not in err
    for _, step, _, _, stats in printed:
        # the evaluation at a step comes before its summary
        assert stats["test_return_mean"] == pytest.approx(latest_logged(info, "test_return_mean", step), abs=1e-4)
        assert info["test_return_mean_T"][-1] >= step
    assert "Finished offline training: 6 gradient steps (24 sampled episodes)" in err
    assert [line for line in err.splitlines() if "Final evaluation (gradient step 6," in line]


def test_evaluation_prints_its_result(tmp_path, capsys):
    run_main(tmp_path / "train", "qmix", "matrix_game", *[s for s in TINY if s != "save_model=False"])
    models = os.path.join(tmp_path, "train", "models")
    ckpt = os.path.join(models, os.listdir(models)[0])
    capsys.readouterr()
    run_main(tmp_path / "eval", "qmix", "matrix_game", *TINY, "evaluate=True", f"checkpoint_path={ckpt}")
    err = capsys.readouterr().err
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "eval", "qmix", "penalty"), "info.json")))
    (printed,) = summaries(err)
    assert printed[2] == "test episodes" and printed[3] == 2
    assert printed[4]["test_return_mean"] == pytest.approx(info["test_return_mean"][0], abs=1e-4)
    assert [line for line in err.splitlines() if "Final evaluation" in line]


def test_collection_prints_a_plain_line_per_quarter(monkeypatch, caplog):
    from types import SimpleNamespace

    from offline import collection

    class Writer:
        def __init__(self, *args, **kwargs):
            self.added = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add(self, batch, qualities):
            self.added += batch.batch_size

    def play(runner, mac, plan, test_mode):
        for start in range(0, len(plan), 8):
            yield start, SimpleNamespace(batch_size=min(8, len(plan) - start))

    monkeypatch.setattr(collection, "DatasetWriter", Writer)
    monkeypatch.setattr(collection, "play", play)
    runner = SimpleNamespace(args=SimpleNamespace(env_args={}))
    log = logging.getLogger("test_collection_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        collection.collect_dataset("/x/expert.h5", runner, None, [["expert"]] * 200, {"expert": "5"}, {},
                                   SimpleNamespace(env="climbing"), {}, log)
        collection.collect_dataset("/x/small.h5", runner, None, [["expert"]] * 20, {"expert": "5"}, {},
                                   SimpleNamespace(env="climbing"), {}, log)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" episodes")[0] for line in lines] == ["expert.h5: 56 / 200", "expert.h5: 104 / 200",
                                                              "expert.h5: 152 / 200"]
    assert all("elapsed, about" in line for line in lines)  # a small dataset prints none


def test_the_final_line_adds_the_envs_own_test_means_of_that_evaluation():
    """SMAX logs test_battle_won_mean beside the return: the closing line carries it (scripts/reevaluate.py reads it
    from there), but not a test stat from an earlier evaluation, nor a training stat."""
    from types import SimpleNamespace as SN

    from run.loop import log_final_evaluation
    from sweeps.reevaluate import FINAL, METRIC

    stats = {"test_return_mean": [(5, 0.1), (10, 1.5)], "test_return_std": [(5, 0.2), (10, 0.5)],
             "test_battle_won_mean": [(5, 0.25), (10, 0.75)], "test_dead_allies_mean": [(5, 2.0)],
             "battle_won_mean": [(10, 0.5)]}
    ctx = SN(logger=SN(stats=stats), args=SN(test_nepisode=32, action_selector="soft_policies", test_greedy=True))
    lines = []
    log_final_evaluation(ctx, SN(info=lines.append), end=10)
    (line,) = lines
    assert FINAL.search(line)
    assert {k: float(v) for k, v in METRIC.findall(line)} == {"test_return_mean": 1.5, "test_return_std": 0.5,
                                                              "test_battle_won_mean": 0.75}
