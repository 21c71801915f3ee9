import os
import re

import pytest

from main import main, parse_updates, split_argv
from utils.config import ConfigError, build_config


def test_merge_order_default_env_alg_overrides():
    cfg = build_config("qmix", "matrix_game", {"lr": 0.1, "env_args": {"episode_limit": 3}})
    assert cfg["learner"] == "q_learner"  # from the alg config
    assert cfg["env"] == "matrix_game"  # from the env config
    assert cfg["lr"] == 0.1 and cfg["env_args"]["episode_limit"] == 3  # overrides win
    assert cfg["env_args"]["game"] == "penalty"  # nested dicts merge key by key
    assert cfg["gamma"] == 0.99  # default


def test_alg_config_overrides_env_config():
    # matrix_game.yaml sets test_interval; the alg config does not, so the env's value stays
    assert build_config("qmix", "matrix_game")["test_interval"] == 2000
    assert build_config("ippo", "matrix_game")["runner"] == "parallel"


@pytest.mark.parametrize("alias,key", [("rnn_hidden_dim", "hidden_dim"),
                                       ("target_update_interval", "target_update_interval_or_tau")])
def test_pymarl_spellings_are_aliases(alias, key):
    cfg = build_config("qmix", "matrix_game", parse_updates([f"{alias}=32"]))
    assert cfg[key] == 32 and alias not in cfg


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match="not_a_key"):
        build_config("qmix", "matrix_game", {"not_a_key": 1})
    with pytest.raises(ConfigError, match="Closest valid keys: .*hidden_dim"):
        build_config("qmix", "matrix_game", {"hiden_dim": 1})
    with pytest.raises(ConfigError, match="mixing_embed_dim"):
        build_config("qmix", "matrix_game", {"mixing_embed_dimm": 1})


def test_env_args_subkeys_are_open_but_other_nested_keys_are_checked():
    cfg = build_config("qmix", "lbf", {"env_args": {"key": "lbforaging:Foraging-8x8-2p-2f-coop-v3"}})
    assert cfg["env_args"]["key"].endswith("coop-v3")


def test_unknown_config_names_list_valid_ones():
    with pytest.raises(ConfigError, match="Did you mean: qmix"):
        build_config("qmixx", "matrix_game")
    with pytest.raises(ConfigError, match="Valid names:.*matrix_game"):
        build_config("qmix", "no_such_env")


def test_both_alias_and_key_is_an_error():
    with pytest.raises(ConfigError, match="alias"):
        build_config("qmix", "matrix_game", {"rnn_hidden_dim": 8, "hidden_dim": 8})


def test_split_argv_accepts_both_flag_forms():
    argv = ["--config", "qmix", "--env-config=lbf", "with", "a=1", "b.c=2", "-l", "DEBUG"]
    alg, env, updates, rest = split_argv(argv)
    assert (alg, env, updates, rest) == ("qmix", "lbf", ["a=1", "b.c=2"], ["-l", "DEBUG"])


def test_parse_updates_uses_sacred_value_parsing():
    key = "lbforaging:Foraging-5x5-2p-1f-v3"
    assert parse_updates(["lr=0.1", f"env_args.key={key}", "use_cuda=False", "mixer=None"]) == {
        "lr": 0.1, "env_args": {"key": key}, "use_cuda": False, "mixer": None}


def test_cli_rejects_unknown_key_with_message(capsys):
    assert main(["main.py", "--config=qmix", "--env-config=matrix_game", "with", "not_a_key=1"]) == 2
    err = capsys.readouterr().err
    assert "not_a_key" in err and "config error" in err


def test_cli_requires_configs(capsys):
    assert main(["main.py", "--env-config=matrix_game"]) == 2
    assert "--config" in capsys.readouterr().err


@pytest.mark.parametrize("key,value,allowed", [
    ("lr", 0, "> 0"), ("lr", -1e-3, "> 0"), ("gamma", 0, r"in \(0, 1\]"), ("gamma", 1.5, r"in \(0, 1\]"),
    ("batch_size", 0, ">= 1"), ("hidden_dim", 0, ">= 1"), ("t_max", -1, ">= 0"), ("batch_size_run", 0, ">= 1"),
    ("buffer_size", 0, ">= 1"), ("critic_lr", 0.0, "> 0"), ("test_nepisode", 0, ">= 1"), ("epsilon_finish", 1.5, "in"),
    ("td_lambda", -0.1, r"in \[0, 1\]"),
    # the optimiser and target network: a clip <= 0 ascends or zeroes the gradient, a tau <= 0 never updates
    ("grad_norm_clip", -1, "> 0"), ("grad_norm_clip", 0, "> 0"),
    ("target_update_interval_or_tau", 0, r"> 0 \(<= 1: soft-update tau; > 1: a hard copy"),
    ("target_update_interval_or_tau", -0.5, "> 0"),
    # the loop's intervals and counts (test_interval=0 divided by zero in run/online.py)
    ("test_interval", 0, ">= 1"), ("save_model_interval", 0, ">= 1"), ("save_model_interval", -5, ">= 1"),
    ("log_interval", -1, r">= 0 \(0 = after every rollout\)"), ("runner_log_interval", -1, ">= 0"),
    ("learner_log_interval", -1, ">= 0"), ("updates_per_rollout", 0, ">= 1"), ("n_workers", -1, ">= 0"),
    ("load_step", -1, r">= 0 \(0 = the latest checkpoint\)"), ("epsilon_anneal_time", 0, ">= 1"),
    ("epsilon_anneal_time", -100, ">= 1"),
    ("seed", -1, r"an integer in \[0, 2\*\*32\)"), ("seed", 2 ** 32, r"in \[0, 2\*\*32\)"),
    ("seed", 1.5, "an integer"), ("seed", "abc", "an integer"), ("seed", True, "an integer"),
])
def test_out_of_range_values_name_the_key_value_and_range(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"'{key}'.* must be .*{allowed}.*; got {re.escape(repr(value))}"):
        build_config("qmix", "matrix_game", {key: value})


@pytest.mark.parametrize("key,value,allowed", [
    ("epochs", 0, ">= 1"), ("epochs", -1, ">= 1"), ("num_mini_batches", 0, ">= 1"), ("eps_clip", -0.1, ">= 0"),
    ("critic_coef", -1, ">= 0"), ("entropy_coef", -0.01, ">= 0"),
])
def test_ppo_settings_out_of_range(key, value, allowed):
    """ippo epochs=0 divided by zero in the learner; negative coefficients turned its losses around."""
    with pytest.raises(ConfigError, match=rf"'{key}' must be .*{allowed}.*; got {value!r}"):
        build_config("ippo", "matrix_game", {key: value})


@pytest.mark.parametrize("key,value,choices", [
    ("optimizer", "sgd", "adam, rmsprop"), ("epsilon_decay", "cosine", "linear, exp"),
    ("reward_scalarisation", "max", "sum, mean"), ("agent_output_type", "logits", "q, pi_logits"),
])
def test_names_outside_their_choices_are_config_errors(key, value, choices):
    with pytest.raises(ConfigError, match=rf"'{key}' must be one of {choices}; got '{value}'"):
        build_config("qmix", "matrix_game", {key: value})


@pytest.mark.parametrize("key", ["name", "local_results_path"])
def test_empty_names_and_paths_are_refused(key):
    with pytest.raises(ConfigError, match=rf"config key '{key}' must not be empty: "):
        build_config("qmix", "matrix_game", {key: ""})
    with pytest.raises(ConfigError, match=rf"config key '{key}' must not be null: "):  # `with name=null`
        build_config("qmix", "matrix_game", {key: "null"})


def test_seed_edges_are_accepted():
    assert build_config("qmix", "matrix_game", {"seed": 0})["seed"] == 0
    assert build_config("qmix", "matrix_game", {"seed": 2 ** 32 - 1})["seed"] == 2 ** 32 - 1
    assert build_config("qmix", "matrix_game", {"seed": None})["seed"] is None


def test_a_key_in_both_spellings_with_different_values_is_an_error():
    with pytest.raises(ConfigError, match="rnn_hidden_dim=32 and hidden_dim=16 set the same key 'hidden_dim' "
                                          r"\(pymarl and epymarl spellings\) to different values; give it once"):
        parse_updates(["rnn_hidden_dim=32", "hidden_dim=16"])
    assert parse_updates(["rnn_hidden_dim=16", "hidden_dim=16"]) == {"hidden_dim": 16}  # the same value: no conflict
    assert parse_updates(["hidden_dim=8", "hidden_dim=16"]) == {"hidden_dim": 16}  # one spelling: Sacred's last wins


@pytest.mark.parametrize("given,per_round,used", [(32, 10, 30), (2, 10, 10), (16, 1, 16), (20, 10, 20), (9, 4, 8)])
def test_test_episodes_are_whole_rounds_of_batch_size_run(given, per_round, used):
    from utils.config import test_episodes

    assert test_episodes({"test_nepisode": given, "batch_size_run": per_round}) == used


# A value of the wrong type is a type error naming the default (it was a range error before the type check).
@pytest.mark.parametrize("key,value,kind,default", [
    ("t_max", "abc", "an integer", "20000"), ("batch_size", 2.5, "an integer", "32"),
    ("lr", "fast", "a number", "0.0005"), ("use_cuda", "maybe", "True or False", "True"),
    ("mixer", 3, "a string", "'qmix'"), ("t_max", None, "an integer", "20000"),
    ("llm.temperature", "hot", "a number", "0.7"), ("hidden_dim", [1], "an integer", "64"),
])
def test_wrong_types_name_the_key_type_default_and_value(key, value, kind, default):
    head, *tail = key.split(".")
    update = {head: {tail[0]: value}} if tail else {key: value}
    with pytest.raises(ConfigError, match=rf"config key {key}\b.* must be {kind} \(default {default}\), got "
                                          rf"{re.escape(repr(value))}"):
        build_config("qmix", "matrix_game", update)


def test_values_that_fit_their_default_type_are_converted_or_kept():
    cfg = build_config("qmix", "matrix_game", {"t_max": 2e6, "lr": 1, "use_cuda": "false", "grad_norm_clip": 0.5,
                                               "mixer": None, "mongo_url": "anything", "critic_lr": None})
    assert cfg["t_max"] == 2000000 and isinstance(cfg["t_max"], int)  # 2e6 from the command line is an integer
    assert cfg["lr"] == 1 and cfg["use_cuda"] is False and cfg["grad_norm_clip"] == 0.5
    assert cfg["mixer"] is None and cfg["mongo_url"] == "anything"  # a null default takes anything
    assert build_config("collect", "matrix_game", {"collect_only": "expert,poor"})["collect_only"] == ["expert", "poor"]
    assert build_config("omar", "matrix_game", {"target_update_interval_or_tau": 0.01})  # int or float key


def test_null_on_the_command_line_is_none_where_the_key_allows_none():
    """`with weight_max=null` reaches the config as the text 'null' (Sacred does not read YAML's null): a key that
    allows null (its range says so, a name, or a null default) takes it as None, as its config file would."""
    cfg = build_config("misodice", "matrix_game", {"weight_max": "null", "critic_lr": "~", "mixer": "null",
                                                   "mongo_url": "NULL"})
    assert cfg["weight_max"] is None and cfg["critic_lr"] is None and cfg["mixer"] is None
    assert cfg["mongo_url"] is None
    with pytest.raises(ConfigError, match=r"config key t_max\b.* must be an integer .*got 'null'"):
        build_config("qmix", "matrix_game", {"t_max": "null"})  # no null for a key that needs a value


def test_t_max_abc_on_the_command_line_says_integer_and_leaves_no_run_folder(tmp_path, capsys):
    assert main(["main.py", "--config=qmix", "--env-config=matrix_game", "with", f"local_results_path={tmp_path}",
                 "t_max=abc"]) == 2
    err = capsys.readouterr().err
    assert "t_max must be an integer (default 20000), got 'abc'" in err
    assert os.listdir(tmp_path) == []


def test_a_yaml_value_of_the_wrong_type_names_the_file(config_dir):
    (config_dir / "algs" / "x.yaml").write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"--config=x: config key lr must be a number \(default 0.1\), got 'fast'"):
        build_config("x", "e")


def test_a_non_utf8_yaml_names_the_file(config_dir):
    (config_dir / "algs" / "x.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"algs/x\.yaml is not UTF-8 text \(byte 0xe9 .*save it as UTF-8"):
        build_config("x", "e")
    (config_dir / "algs" / "y.yaml").write_text("lr: [1\n")
    with pytest.raises(ConfigError, match=r"algs/y\.yaml is not valid YAML") as e:
        build_config("y", "e")
    assert "lr: [1\n" in str(e.value) and "^" in str(e.value)  # the line it quotes, a caret under the error


def test_the_fast_yaml_loader_reads_every_shipped_config_as_pyyaml_does():
    """read_yaml parses with libyaml (FAST_LOADER) for speed: the same values as PyYAML's own loader."""
    import glob

    import yaml

    from utils.config import CONFIG_DIR, FAST_LOADER

    files = glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)
    assert len(files) > 50
    for path in files:
        text = open(path, encoding="utf-8").read()
        assert yaml.load(text, Loader=FAST_LOADER) == yaml.safe_load(text), path


def test_pymarl_spelling_of_a_ranged_key_is_named_too(capsys):
    assert main(["main.py", "--config=qmix", "--env-config=matrix_game", "with", "rnn_hidden_dim=0"]) == 2
    err = capsys.readouterr().err
    assert "'hidden_dim' (pymarl: rnn_hidden_dim) must be an integer >= 1; got 0" in err


def test_edge_values_are_accepted():
    cfg = build_config("mappo", "matrix_game", {"gamma": 1.0, "t_max": 0, "critic_lr": None, "lr": 1e-8})
    assert cfg["gamma"] == 1.0 and cfg["t_max"] == 0


def test_on_nonfinite_must_be_stop_or_skip_batch():
    assert build_config("qmix", "matrix_game")["on_nonfinite"] == "stop"
    assert build_config("qmix", "matrix_game", {"on_nonfinite": "skip_batch"})["on_nonfinite"] == "skip_batch"
    with pytest.raises(ConfigError, match="'on_nonfinite' must be one of stop, skip_batch; got 'ignore'"):
        build_config("qmix", "matrix_game", {"on_nonfinite": "ignore"})


def test_run_mode_configs_are_found_in_config_runs():
    from utils.config import available, run_config_path
    assert {"collect", "qllm_generate"} <= set(available("runs"))
    assert not {"collect", "qllm_generate"} & set(available("algs"))
    assert run_config_path("collect").endswith(os.path.join("config", "runs", "collect.yaml"))
    assert build_config("collect", "matrix_game")["run"] == "collect"
    assert build_config("qllm_generate", "matrix_game")["run"] == "qllm_generate"


def test_unknown_config_name_lists_algs_and_runs():
    with pytest.raises(ConfigError, match=r"config/algs/ or config/runs/.*Valid names:.*collect.*qmix"):
        build_config("no_such_alg", "matrix_game")
    with pytest.raises(ConfigError, match="Did you mean: collect"):
        build_config("colect", "matrix_game")


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """An empty config folder with default.yaml and one env, for lookup tests."""
    import utils.config
    for sub in ("algs", "runs", "envs"):
        (tmp_path / sub).mkdir()
    (tmp_path / "default.yaml").write_text("lr: 0.1\nrun: online\n")
    (tmp_path / "envs" / "e.yaml").write_text("env: matrix_game\n")
    monkeypatch.setattr(utils.config, "CONFIG_DIR", str(tmp_path))
    return tmp_path


def test_a_name_in_both_folders_is_an_error_naming_both_files(config_dir):
    (config_dir / "algs" / "x.yaml").write_text("lr: 0.2\n")
    (config_dir / "runs" / "x.yaml").write_text("lr: 0.3\n")
    with pytest.raises(ConfigError, match=r"algs/x\.yaml and .*runs/x\.yaml"):
        build_config("x", "e")


def test_inherit_works_across_algs_and_runs(config_dir):
    (config_dir / "algs" / "base.yaml").write_text("lr: 0.2\nname: base\n")
    (config_dir / "runs" / "mode.yaml").write_text("inherit: base\nrun: mode\n")
    (config_dir / "algs" / "variant.yaml").write_text("inherit: mode\nname: variant\n")
    cfg = build_config("variant", "e")
    assert (cfg["lr"], cfg["run"], cfg["name"]) == (0.2, "mode", "variant")
    (config_dir / "runs" / "loop.yaml").write_text("inherit: loop2\n")
    (config_dir / "algs" / "loop2.yaml").write_text("inherit: loop\n")
    with pytest.raises(ConfigError, match="inherit cycle loop -> loop2 -> loop"):
        build_config("loop", "e")


def test_inherit_a_list_merges_left_to_right_then_the_file(config_dir):
    (config_dir / "algs" / "alg.yaml").write_text("lr: 0.2\nname: alg\nbatch_size: 8\n")
    (config_dir / "runs" / "labels.yaml").write_text("run: label\nname: labels\nlr: 0.3\n")
    (config_dir / "runs" / "both.yaml").write_text("inherit: [alg, labels]\nrun: online\n")
    cfg = build_config("both", "e")
    assert (cfg["lr"], cfg["batch_size"], cfg["name"], cfg["run"]) == (0.3, 8, "labels", "online")


def test_the_config_choices_of_the_method_keys_are_their_modules_own():
    """utils.config.CHOICES checks noise_mode and augment_stage before a run starts; the layers keep utils from
    importing the modules that define them, so this test keeps the two lists equal."""
    from augmenters.codi.settings import STAGES
    from labeling.oracle import NOISE_MODES
    from utils.config import CHOICES

    assert CHOICES["noise_mode"] == NOISE_MODES and CHOICES["augment_stage"] == STAGES


def test_the_core_choices_are_what_the_modules_accept():
    """optimizer, epsilon_decay, reward_scalarisation and agent_output_type: every value CHOICES lets through is one
    the module that reads it takes (and the modules' own lists are CHOICES')."""
    from types import SimpleNamespace

    import torch

    from components.action_selectors import REGISTRY as selectors
    from components.schedules import DECAYS, DecayThenFlatSchedule
    from envs.multiagentenv import REWARD_SCALARISATIONS
    from learners import REGISTRY as learners
    from learners.common import make_optimizer
    from utils.config import CHOICES

    assert DECAYS == CHOICES["epsilon_decay"] and REWARD_SCALARISATIONS == CHOICES["reward_scalarisation"]
    for decay in CHOICES["epsilon_decay"]:
        DecayThenFlatSchedule(1.0, 0.05, 100, decay=decay)
    params = [torch.nn.Parameter(torch.zeros(1))]
    for optimizer in CHOICES["optimizer"]:
        make_optimizer(params, SimpleNamespace(optimizer=optimizer, lr=0.1, optim_alpha=0.99, optim_eps=1e-5))
    declared = {getattr(c, "agent_output_type", None) for c in (*learners.values(), *selectors.values())}
    assert declared - {None} == set(CHOICES["agent_output_type"])


@pytest.mark.parametrize("alg,key,value,allowed", [
    # the offline learners' own keys (a value outside made NaN at step 0, a loss that changes sign, or a raw error)
    ("omiga", "omiga_alpha", 0, "> 0"), ("omapl", "omiga_alpha", -1.0, "> 0"), ("omar", "cql_alpha", -100, ">= 0"),
    ("omar", "omar_coe", 5, r"in \[0, 1\]"), ("omar", "omar_coe", -1, r"in \[0, 1\]"),
    ("omapl", "omapl_reward_reg", -5, ">= 0"), ("misodice", "exp_clip", -5, "> 0"), ("misodice", "exp_clip", 0, "> 0"),
    ("omiga", "mixing_embed_dim", 0, ">= 1"), ("qmix", "mixing_embed_dim", -3, ">= 1"),
    ("bc", "offline_save_interval", 0, ">= 1"), ("bc", "offline_save_interval", -3, ">= 1"),
    ("bc", "offline_test_interval", 0, ">= 1"), ("bc", "offline_test_interval", -5, ">= 1"),
    ("bc", "bc_beta", 2, r"in \[0, 1\]"), ("bc_beta", "bc_beta", -1, r"in \[0, 1\]"),
    ("marl_sl", "marl_sl_hidden_dim", 0, ">= 1"), ("marl_sl", "topk_expert", 0, ">= 1"),
    ("marl_sl", "topk_expert", -3, ">= 1"), ("qmix", "lr", 1e38, r"<= 1e30"), ("omar", "critic_lr", 1e31, r"<= 1e30"),
])
def test_offline_settings_out_of_range(alg, key, value, allowed):
    with pytest.raises(ConfigError, match=rf"'{key}' must be .*{allowed}.*; got {re.escape(repr(value))}"):
        build_config(alg, "matrix_game", {key: value})


@pytest.mark.parametrize("low,high", [(5.0, 5.0), (10, -10)])
def test_reference_returns_must_be_increasing(low, high):
    """low == high divided by zero at the first evaluation (after the run folder existed); low > high turned the
    normalised score around."""
    with pytest.raises(ConfigError, match=rf"reference_return_low={low!r} and reference_return_high={high!r}: .*"
                                          r"needs high > low"):
        build_config("bc", "matrix_game", {"reference_return_low": low, "reference_return_high": high})
    assert build_config("bc", "matrix_game", {"reference_return_low": -1, "reference_return_high": 1})
    assert build_config("bc", "matrix_game", {"reference_return_low": 5.0})  # one alone: no normalised score


@pytest.mark.parametrize("spec,match", [("top:x:0", "integer K >= 1"), ("top:x:abc", "integer K >= 1"),
                                        ("top:x", "expected 'top:<label name>:<K>'"), ("label:", "label:<label name>")])
def test_offline_expert_forms_are_checked_before_the_run(spec, match):
    from run.preflight import check_config

    with pytest.raises(ConfigError, match=match):
        check_config(build_config("bc_beta", "matrix_game", {"offline_expert": spec}))


@pytest.mark.parametrize("update", ["bc_beta=2", "offline_expert=top:x:abc", "reference_return_low=1",
                                    "lr=1e38"])
def test_offline_mistakes_exit_2_before_a_run_folder(tmp_path, capsys, update):
    """These exited 1 with a traceback after the Sacred run folder existed."""
    extra = ["reference_return_high=1"] if update.startswith("reference") else []
    assert main(["main.py", "--config=bc_beta", "--env-config=matrix_game", "with", update, *extra,
                 f"local_results_path={tmp_path}", "offline_dataset=none.h5"]) == 2
    assert "config error" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_nested_true_false_null_on_the_command_line_read_as_yaml():
    """Sacred leaves `env_args.normalize_reward=false` as the text 'false' (a truthy string): nested keys read
    true/false/null/~ as YAML does, as top-level keys are by their type."""
    updates = parse_updates(["env_args.normalize_reward=false", "env_args.force_coop=true", "env_args.x=~",
                             "env_args.y=null", "env_args.z=abc", "env_args.a=no", "env_args.b=On", "env_args.c=3m"])
    assert updates["env_args"] == {"normalize_reward": False, "force_coop": True, "x": None, "y": None, "z": "abc",
                                   "a": False, "b": True, "c": "3m"}  # yes/no/on/off as PyYAML reads config files
    cfg = build_config("qmix", "lbf", updates)
    assert cfg["env_args"]["normalize_reward"] is False and cfg["env_args"]["force_coop"] is True


@pytest.mark.parametrize("value", [10.5, "abc", None, 0, True])
def test_env_args_time_limit_must_be_a_positive_integer(value):
    for env in ("lbf", "gymma", "matrix_game"):  # the envs that take it and one that does not
        with pytest.raises(ConfigError, match=rf"'env_args.time_limit' must be an integer >= 1 \(steps per "
                                              rf"episode\); got {re.escape(repr(value))}"):
            build_config("qmix", env, {"env_args": {"time_limit": value}})


def test_env_args_key_must_be_a_string():
    with pytest.raises(ConfigError, match=r"config key env_args.key must be a string, the env id.*got \[1, 2\]"):
        build_config("qmix", "gymma", {"env_args": {"key": [1, 2]}})


@pytest.mark.parametrize("key,value,allowed", [
    ("hypernet_embed", 0, "an integer >= 1"), ("hypernet_layers", 3, "1 or 2"), ("hypernet_layers", 0, "1 or 2"),
    ("num_kernel", 0, "an integer >= 1"), ("optim_alpha", 1.0, r"in \(0, 1\)"), ("optim_alpha", 0, r"in \(0, 1\)"),
    ("optim_eps", 0, "> 0"), ("adv_hypernet_layers", 0, "an integer >= 1"),
])
def test_mixer_and_rmsprop_settings_out_of_range(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"'{key}' must be {allowed}.*; got {value}"):
        build_config("qplex", "matrix_game", {key: value})


@pytest.mark.parametrize("name", ["../../x", "my exp/v2", "a\\b", ".hidden", "a..b", "a b"])
def test_run_names_that_would_leave_or_nest_the_results_folder_are_refused(name):
    with pytest.raises(ConfigError, match=r"'name' names the run's folders.*use letters, digits, '_', '-' and '\.'"):
        build_config("qmix", "matrix_game", {"name": name})
    assert build_config("qmix", "matrix_game", {"name": "my_exp-v2.1"})["name"] == "my_exp-v2.1"


@pytest.mark.parametrize("update,match", [
    ({"q_nstep": 5}, r"config key 'q_nstep' \(EPyMARL\) is not available here: .*gae_lambda"),
    ({"standardise_returns": True}, r"'standardise_returns' \(EPyMARL\).*use_value_norm=True"),
    ({"use_critic_rnn": True}, r"'use_critic_rnn' \(EPyMARL\).*feed-forward"),
    ({"target_update_interval_or_tau": 0.01}, r"\(EPyMARL\).*keep no target critic"),
])
def test_epymarl_keys_we_do_not_have_say_what_to_use(update, match):
    with pytest.raises(ConfigError, match=match):
        build_config("ia2c", "matrix_game", update)


@pytest.mark.parametrize("name,use", [("coma", "maa2c"), ("maddpg", "mappo"), ("pac", "mappo"),
                                      ("ia2c_ns", "ippo_ns with epochs=1"), ("maa2c_ns", "mappo_ns with epochs=1")])
def test_epymarl_algs_we_do_not_have_say_what_to_use(name, use):
    with pytest.raises(ConfigError, match=rf"--config={name} \(EPyMARL\) is not available here: .*{use}"):
        build_config(name, "matrix_game")


def test_epymarl_learner_names_say_what_to_use():
    from run.preflight import check_config
    config = build_config("ia2c", "matrix_game", {"learner": "actor_critic_learner"})
    with pytest.raises(ConfigError, match=r"learner=actor_critic_learner \(EPyMARL\).*ppo_learner with epochs=1"):
        check_config(config)


@pytest.fixture
def shipped_config_dir(config_dir):
    """config_dir with its SHIPPED.txt listing the files there (the shipped configs)."""
    import utils.config
    (config_dir / "algs" / "q.yaml").write_text("lr: 0.2\nq_only: 3\n")  # a key only this shipped file declares
    (config_dir / "SHIPPED.txt").write_text("default.yaml\nalgs/q.yaml\nenvs/e.yaml\n")
    utils.config.shipped_keys.cache_clear()
    yield config_dir
    utils.config.shipped_keys.cache_clear()


def test_a_typo_in_the_users_own_yaml_names_the_file_and_the_closest_key(shipped_config_dir):
    git_config_dir = shipped_config_dir
    assert build_config("q", "e")["q_only"] == 3  # a shipped file's own keys are declared by it
    (git_config_dir / "algs" / "myq.yaml").write_text("inherit: q\nq_onyl: 4\n")
    with pytest.raises(ConfigError, match=r"algs/myq\.yaml: unknown config key 'q_onyl'\. Closest valid keys: q_only"):
        build_config("myq", "e")
    (git_config_dir / "envs" / "mye.yaml").write_text("env: matrix_game\nlrr: 1\n")
    with pytest.raises(ConfigError, match=r"envs/mye\.yaml: unknown config key 'lrr'.*Closest valid keys: lr"):
        build_config("q", "mye")
    # a key unlike any shipped one is the file's own new key (a new learner's: docs/adding-a-learner.md)
    (git_config_dir / "algs" / "mine.yaml").write_text("inherit: q\nmy_coefficient: 0.5\n")
    assert build_config("mine", "e")["my_coefficient"] == 0.5


def test_shipped_list_is_the_config_files_git_tracks():
    """config/SHIPPED.txt (read instead of git, which a download may lack) must name every shipped config file."""
    import subprocess

    from utils.config import SHIPPED_REGENERATE
    from utils.paths import REPO_ROOT
    try:
        tracked = subprocess.run(["git", "-C", REPO_ROOT, "ls-files", "--", "config/*.yaml"], capture_output=True,
                                 check=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if not tracked:  # a copy inside another repository that does not track it
        pytest.skip("git does not track this checkout's config files")
    with open(os.path.join(REPO_ROOT, "config", "SHIPPED.txt")) as f:
        listed = f.read().split()
    assert listed == [t.removeprefix("config/") for t in tracked], (
        f"config/SHIPPED.txt is not the list of tracked config files; after adding or removing a config this project "
        f"ships, regenerate it: {SHIPPED_REGENERATE}. A fork's own configs stay out of the list (listed, their typos "
        f"would count as known keys): deselect this test there instead")


def test_a_typo_in_the_users_own_yaml_is_refused_without_git(tmp_path):
    """A download without .git (or no git at all): the user's own file is still not a shipped one."""
    import shutil
    import subprocess
    import sys

    from utils.paths import REPO_ROOT
    for sub in ("src", "config"):
        shutil.copytree(os.path.join(REPO_ROOT, sub), tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "config" / "algs" / "myq.yaml").write_text("inherit: qmix\nhiden_dim: 64\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "GIT_CEILING_DIRECTORIES": str(tmp_path.parent),
           "PATH": os.path.dirname(sys.executable)}  # no git on PATH either
    code = "from utils.config import build_config; build_config('myq', 'matrix_game')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "myq.yaml: unknown config key 'hiden_dim'" in out.stderr, out.stderr


def test_every_shipped_config_loads():
    from utils.config import available
    for alg in available("algs") + available("runs"):
        build_config(alg, "matrix_game")
    for env in available("envs"):
        build_config("qmix", env)


def test_a_key_repeated_with_another_value_is_said_with_both_values():
    """The last wins, as in Sacred and epymarl (scripts append overrides), but is never silent."""
    from utils.cli import repeated_keys

    assert repeated_keys(["t_max=800", "lr=0.1", "t_max=500"]) == [
        "'t_max' is given twice (t_max=800, then t_max=500): the last, 500, is used"]
    assert repeated_keys(["t_max=800", "t_max=800", "env_args.time_limit=5"]) == []  # the same value twice
    # a dict sets each of its keys: against a dotted key, either way round, at any depth
    assert repeated_keys(["env_args.time_limit=10", 'env_args={"time_limit": 20, "key": "x"}', "env_args.key=x"]) == [
        "'env_args.time_limit' is given twice (env_args.time_limit=10, then env_args.time_limit=20): the last, 20, "
        "is used"]
    assert repeated_keys(['llm={"local": {"threads": 2}}', "llm.local.threads=4"]) == [
        "'llm.local.threads' is given twice (llm.local.threads=2, then llm.local.threads=4): the last, 4, is used"]
    assert repeated_keys(['env_args={"time_limit": 20}', "env_args.time_limit=20"]) == []
    # a key given whole after keys under it replaces them (Sacred's updates): those not set again are named dropped
    assert repeated_keys(["env_args.key=x", 'env_args={"time_limit": 20}']) == [
        "'env_args.key=x' is dropped: the later env_args={\"time_limit\": 20} replaces what was given for 'env_args' "
        "(give env_args.key after it, or inside it)"]
    assert repeated_keys(['env_args={"time_limit": 20}', "env_args.key=y"]) == []  # a dotted key after a dict adds


def test_a_tab_pyyaml_refuses_is_refused_as_before(config_dir):
    """libyaml takes `a:\\t1`; PyYAML (and so every other reader of the project's YAML) refuses it."""
    (config_dir / "algs" / "t.yaml").write_text("lr:\t0.1\n")
    with pytest.raises(ConfigError, match=r"algs/t\.yaml is not valid YAML"):
        build_config("t", "e")
