"""A run's folder says how to reproduce it (run.json's meta: configs, overrides as given, git, packages, machine), and
`python src/main.py --rerun <run folder>` re-runs it with the same config."""
import json
import os
import re

from helpers import sacred_dir
from main import main
from utils.provenance import git_info, rerun_config

TINY = ["t_max=40", "env_args.episode_limit=5", "test_nepisode=2", "test_interval=20", "log_interval=20",
        "runner_log_interval=20", "learner_log_interval=20", "batch_size=4", "buffer_size=8",
        "epsilon_anneal_time=100", "use_tensorboard=False", "save_model=False"]


def train(results, *updates, alg="vdn"):
    """A tiny run through main() with no seed given (Sacred draws one)."""
    argv = ["main.py", f"--config={alg}", "--env-config=matrix_game", "with", f"local_results_path={results}",
            *TINY, *updates]
    assert main(argv) == 0


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def test_run_json_records_the_overrides_commit_packages_and_machine(tmp_path):
    train(tmp_path, "rnn_hidden_dim=16")
    run = sacred_dir(tmp_path, "vdn", "penalty")
    meta = read(run, "run.json")["meta"]
    assert meta["alg_config"] == "vdn" and meta["env_config"] == "matrix_game"
    # the overrides as given (pymarl alias included), and parsed under their canonical names
    assert meta["with_updates"] == [f"local_results_path={tmp_path}", *TINY, "rnn_hidden_dim=16"]
    assert meta["config_updates"]["hidden_dim"] == 16 and meta["config_updates"]["env_args"] == {"episode_limit": 5}
    assert re.fullmatch(r"[0-9a-f]{40}", meta["git"]["commit"]) and isinstance(meta["git"]["dirty"], bool)
    assert {"torch", "numpy", "gymnasium", "sacred"} <= set(meta["packages"])
    assert meta["machine"]["cpu_cores"] >= 1 and meta["machine"]["python"] and "gpus" in meta["machine"]
    deps = read(run, "run.json")["experiment"]["dependencies"]
    assert any(d.startswith("torch==") for d in deps)
    assert read(run, "config.json")["hidden_dim"] == 16 and isinstance(read(run, "config.json")["seed"], int)


def test_git_info_outside_a_checkout_says_why(tmp_path):
    info = git_info(str(tmp_path))
    assert info["commit"] is None and info["why"].startswith("not recorded")


def test_rerun_reproduces_the_run_config_and_says_what_it_reruns(tmp_path):
    train(tmp_path, "lr=0.001", "env_args.penalty=-50")
    first = sacred_dir(tmp_path, "vdn", "penalty")
    assert main(["main.py", "--rerun", first]) == 0
    second = os.path.join(os.path.dirname(first), "2")
    original, again = read(first, "config.json"), read(second, "config.json")
    assert again == original  # every value, the drawn seed included
    meta = read(second, "run.json")["meta"]
    assert meta["rerun_of"] == first and read(second, "info.json")["rerun_of"] == first
    assert meta["with_updates"] == read(first, "run.json")["meta"]["with_updates"]

    # overrides after `with` apply on top of the run's, and are recorded with them
    assert main(["main.py", f"--rerun={first}", "with", "t_max=20"]) == 0
    third = os.path.join(os.path.dirname(first), "3")
    assert read(third, "config.json") == {**original, "t_max": 20}
    assert read(third, "run.json")["meta"]["with_updates"][-1] == "t_max=20"


def test_rerun_keeps_the_recorded_values_where_the_yaml_changed(tmp_path):
    train(tmp_path)
    run = sacred_dir(tmp_path, "vdn", "penalty")
    recorded = read(run, "config.json")
    # as if config/algs/vdn.yaml had a different lr then, and a key since removed
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({**recorded, "lr": 0.123, "old_key": 1}, f)
    folder, alg, env, tokens, config, notes = rerun_config(run)
    assert (alg, env) == ("vdn", "matrix_game") and config["lr"] == 0.123 and "old_key" not in config
    assert config["seed"] == recorded["seed"]
    assert any(n.startswith("lr: the run had 0.123") for n in notes) and any("old_key" in n for n in notes)


def test_rerun_of_a_run_recorded_before_the_meta(tmp_path):
    """Runs from before issue 12 recorded no configs or tokens: the config's name and env config stand in."""
    train(tmp_path, "hidden_dim=8")
    run = sacred_dir(tmp_path, "vdn", "penalty")
    entry = read(run, "run.json")
    entry["meta"] = {"config_updates": {}}
    with open(os.path.join(run, "run.json"), "w") as f:
        json.dump(entry, f)
    config = rerun_config(run)[4]
    assert config == read(run, "config.json")


def test_rerun_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["main.py", "--rerun", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["main.py", "--rerun", str(tmp_path), "--config=qmix"]) == 2
    assert "--rerun takes --config" in capsys.readouterr().err


def test_a_rerun_of_a_sweep_trial_is_not_that_trial(tmp_path):
    """A sweep finds its trials' runs by their `label`: a rerun (perhaps with other overrides) drops it."""
    train(tmp_path, "label=sweep:study:abcd1234:0")
    run = sacred_dir(tmp_path, "vdn", "penalty")
    folder, alg, env, tokens, config, notes = rerun_config(run)
    assert config["label"] == "default_label" and not any(t.startswith("label=") for t in tokens)
    assert rerun_config(run, ["label=mine"])[4]["label"] == "mine"


def test_a_rerun_does_not_flag_the_test_episodes_the_run_recorded(tmp_path):
    """config.json records the test episodes that ran (test_nepisode=3 with 2 envs: 2); the rerun's configs give the
    same 2 episodes, so that is no difference to note."""
    train(tmp_path, "runner=parallel", "batch_size_run=2", "n_workers=1", "test_nepisode=3", alg="qmix")
    run = sacred_dir(tmp_path, "qmix", "penalty")
    assert read(run, "config.json")["test_nepisode"] == 2
    folder, alg, env, tokens, config, notes = rerun_config(run)
    assert config["test_nepisode"] == 2 and not [n for n in notes if "test_nepisode" in n]
