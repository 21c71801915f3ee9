"""Errors before work, and no litter: src/main.py reports a mistake on the command line or in a config with a message
and a non-zero exit status before Sacred starts, so no run folder and no TensorBoard folder is left; `--help` prints
usage, the configs and where the README is. A config error found only while the run builds removes what it wrote."""
import os
import shutil

import pytest

from envs import REGISTRY as env_REGISTRY
from envs.multiagentenv import EnvArgumentError
from main import main
from utils.paths import CONFIG_DIR, REPO_ROOT


def cli(tmp_path, capsys, *args, alg="qmix", env="matrix_game", expect=2):
    argv = [f"--config={alg}", f"--env-config={env}", *args]
    if "with" in args:
        argv.append(f"local_results_path={tmp_path}")
    assert main(["main.py", *argv]) == expect
    out = capsys.readouterr()
    assert not os.path.exists(os.path.join(tmp_path, "sacred"))
    assert not os.path.exists(os.path.join(tmp_path, "tb_logs"))
    return out.err


def test_t_max_abc(tmp_path, capsys):
    err = cli(tmp_path, capsys, "with", "t_max=abc")
    assert "config error: config key t_max must be an integer (default 20000), got 'abc'" in err


def test_env_argument_typo(tmp_path, capsys):
    err = cli(tmp_path, capsys, "with", "env_args.episode_limt=20")
    assert ("unknown env argument 'episode_limt' for matrix_game; valid: game, episode_limit, penalty; "
            "did you mean 'episode_limit'?") in err


def test_gymma_time_limit_typo(tmp_path, capsys):
    err = cli(tmp_path, capsys, "with", "env_args.key=lbforaging:Foraging-8x8-2p-2f-coop-v3", "env_args.time_limt=20",
              env="gymma")
    assert "unknown env argument 'time_limt' for gymma; valid: key, time_limit" in err
    assert "did you mean 'time_limit'?" in err


def test_epymarl_gymma_id_says_which_env_config(tmp_path, capsys):
    err = cli(tmp_path, capsys, "with", "env_args.key=pz-mpe-simple-spread-v3", env="gymma")
    assert "use --env-config=mpe_spread instead of --env-config=gymma" in err
    assert "env_args.local_ratio=0.5 gives epymarl's" in err  # its reward scale differs from epymarl's (2x)


@pytest.mark.parametrize("typo", ["wiht", "wtih", "With"])
def test_misspelt_with(tmp_path, capsys, typo):
    err = cli(tmp_path, capsys, typo, f"local_results_path={tmp_path}", "t_max=100")
    assert f"unexpected '{typo}': did you mean `with`?" in err
    assert not os.listdir(tmp_path)


def test_update_without_with_and_stray_words(tmp_path, capsys):
    err = cli(tmp_path, capsys, f"local_results_path={tmp_path}")
    assert f"'local_results_path={tmp_path}' is an update but no `with` comes before it" in err
    err = cli(tmp_path, capsys, "banana")
    assert "unexpected argument 'banana'" in err
    err = cli(tmp_path, capsys, "--nmae", "x")
    assert "unknown option '--nmae'; did you mean --name?" in err


def test_unknown_names_in_the_config_fail_before_the_run(tmp_path, capsys):
    assert "config key mixer names no mixer: 'qmixx'" in cli(tmp_path, capsys, "with", "mixer=qmixx")
    assert "did you mean 'episode'" in cli(tmp_path, capsys, "with", "runner=episod")
    assert "Valid envs" in cli(tmp_path, capsys, "with", "env=not_an_env")
    assert "common_reward=False" in cli(tmp_path, capsys, "with", "common_reward=False")


def test_non_utf8_yaml_names_the_file(tmp_path, capsys, monkeypatch):
    import utils.config

    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    (config_dir / "algs" / "mine.yaml").write_bytes("inherit: qmix\n# caf\u00e9\n".encode("latin-1"))
    monkeypatch.setattr(utils.config, "CONFIG_DIR", str(config_dir))
    err = cli(tmp_path / "results", capsys, "with", alg="mine")
    assert "config error: config/algs/mine.yaml is not UTF-8 text (byte 0xe9 at offset 19); save it as UTF-8" in err


@pytest.mark.parametrize("flag", [["--help"], ["-h"], ["--config=qmix", "--help"]])
def test_help(capsys, flag):
    assert main(["main.py", *flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python src/main.py --config=ALG --env-config=ENV [with key=value ...]")
    for name in ("qmix", "mappo", "collect", "qllm_generate", "mpe_spread", "lbf", "matrix_game"):
        assert f" {name}," in out or f" {name}\n" in out, name
    assert os.path.join(REPO_ROOT, "README.md") in out


class ConfigErrorWhileBuilding:
    """An env that finds a config error only once it is built (as an env with a missing optional package may)."""

    def __init__(self, **kwargs):
        raise EnvArgumentError("bad value found while building")


def test_a_config_error_found_while_building_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(env_REGISTRY, "builds_badly", ConfigErrorWhileBuilding)
    keep = tmp_path / "tb_logs" / "someone_elses_run"
    keep.mkdir(parents=True)
    assert main(["main.py", "--config=qmix", "--env-config=matrix_game", "with", f"local_results_path={tmp_path}",
                 "env=builds_badly", "seed=1"]) == 2
    assert "config error: bad value found while building" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "sacred")
    assert os.listdir(tmp_path / "tb_logs") == ["someone_elses_run"]


@pytest.mark.parametrize("alg, env, updates, message", [
    ("bc", "lbf_8x8_2p_2f_coop", ["offline_steps=-1"], "config key 'offline_steps' must be an integer >= 1; got -1"),
    ("bc", "lbf_8x8_2p_2f_coop", ["offline_top_fraction=2"], "config key 'offline_top_fraction' must be in (0, 1]"),
    ("bc", "lbf_8x8_2p_2f_coop", ["offline_valid_fraction=1.0"], "'offline_valid_fraction' must be in [0, 1)"),
    ("label_preferences", "climbing", ["labeler=nosy_oracle"],
     "config key labeler names no labeler: 'nosy_oracle'; valid: llm, noisy_oracle, oracle; did you mean "
     "'noisy_oracle'?"),
    ("label_preferences", "climbing", ["noise_mode=exactt"], "'noise_mode' must be one of bernoulli, exact"),
    ("label_preferences", "climbing", ["max_requests=-3"], "'max_requests' must be an integer >= 0 (0 = cached"),
    ("label_preferences", "climbing", ["max_cost_usd=-1"], "'max_cost_usd' must be >= 0 (null = no limit)"),
    ("label_preferences", "climbing", ["labeler=llm", "llm.backend=openai", "llm.model=m", "llm.base_url=127.0.0.1:9"],
     "llm.base_url must be an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1; got '127.0.0.1:9'"),
    ("label_preferences", "climbing", ["labeler=llm", "llm.backend=openai", "llm.model=m", "llm.temperature=-1"],
     "llm.temperature must be null (the server's default) or a number >= 0, got -1"),
    ("lca_label", "two_switch", ["labeler=llm", "llm.backend=openai", "llm.model=m", "llm.top_p=0"],
     "llm.top_p must be null (the server's default) or a number in (0, 1], got 0"),
    ("label_preferences", "climbing", ["labeler=llm", "llm.backend=openai", "llm.model=m", "max_cost_usd=2"],
     "max_cost_usd=2 needs the model's prices: set llm.price_in_per_m and llm.price_out_per_m"),
    ("label_preferences", "climbing", ["labeler=llm", "llm.backend=openai", "llm.model=m", "llm.price_in_per_m=-1"],
     "llm.price_in_per_m must be a number >= 0, got -1"),
    # a key in the llm block is refused for any run (every run records the block), and never repeated
    ("qmix", "climbing", ["llm.base_url=https://u:sk-abcdef0123456789@api.example.com/v1"],
     "llm.base_url must not hold credentials (user:password@) or a query string (?key=...)"),
    ("qmix", "climbing", ["llm.api_key_env=sk-abcdef0123456789"],
     "looks like an API key itself (not repeated here)"),
    ("codi", "mpe_spread", ["augment_stage=genrate"], "'augment_stage' must be one of all, labeler, train, generate"),
    ("codi", "mpe_spread", ["target_rtg=lots"], "target_rtg='lots': expected a number"),
    ("codi", "mpe_spread", ["target_rtg=quantile:1.5"],
     "target_rtg=quantile:1.5: expected quantile:q with q in [0, 1]"),
    ("madiff_like", "mpe_spread", ["delta=-1"], "delta must be auto"),
    ("codi", "mpe_spread", ["augment_episodes=-2"], "'augment_episodes' must be an integer >= 1"),
])
def test_method_settings_out_of_range_are_config_errors(tmp_path, capsys, alg, env, updates, message):
    """The LLM methods' keys (offline training, labeling, the llm block of an llm labeler, CODI's settings) are checked
    before the run starts, as the core keys are: one line, the key, the value and what is allowed."""
    assert message in cli(tmp_path, capsys, "with", *updates, alg=alg, env=env)


@pytest.mark.parametrize("alg, updates, message", [
    # settings that Sacred, the runner or the learner found only once the run had started (a FAILED run folder)
    ("qmix", ["optimizer=sgd"], "config key 'optimizer' must be one of adam, rmsprop; got 'sgd'"),
    ("qmix", ["epsilon_decay=cosine"], "config key 'epsilon_decay' must be one of linear, exp; got 'cosine'"),
    ("qmix", ["reward_scalarisation=max"], "config key 'reward_scalarisation' must be one of sum, mean; got 'max'"),
    ("qmix", ["seed=abc"], "config key 'seed' must be an integer in [0, 2**32) (or null = Sacred draws one); got "
     "'abc'"),
    ("qmix", ["seed=1.5"], "config key 'seed' must be an integer in [0, 2**32)"),
    ("qmix", ["test_interval=0"], "config key 'test_interval' must be an integer >= 1"),
    ("ippo", ["epochs=0"], "config key 'epochs' must be an integer >= 1 (passes over each batch); got 0"),
    ("qmix", ["grad_norm_clip=-1"], "config key 'grad_norm_clip' must be > 0"),
    ("qmix", ["target_update_interval=0"],
     "config key 'target_update_interval_or_tau' (pymarl: target_update_interval) must be > 0"),
    ("qmix", ["evaluate=True"], "needs a trained model: give checkpoint_path=results/models/<run>"),
    ("qmix", ["batch_size_run=4"], "batch_size_run=4: runner=episode plays one env at a time; use runner=parallel"),
    ("ippo", ["action_selector=epsilon_greedy"], "action_selector=epsilon_greedy acts on agent_output_type=q outputs, "
     "but ippo's agents output pi_logits: use action_selector=multinomial or soft_policies"),
    ("ippo", ["agent_output_type=q"], "agent_output_type=q: ippo (learner: ppo_learner) trains a policy"),
    ("bc", ["agent_output_type=q"], "agent_output_type=q: bc (learner: bc_learner) trains a policy"),
    ("qmix", ["agent_output_type=pi_logits"], "agent_output_type=pi_logits: qmix (learner: q_learner) trains action "
     "values (Q), so its agents must output agent_output_type=q"),
    ("vdn", ["action_selector=soft_policies"], "action_selector=soft_policies acts on agent_output_type=pi_logits "
     "outputs, but vdn's agents output q: use action_selector=epsilon_greedy"),
    # runs that could never train ended COMPLETED
    ("qmix", ["batch_size=20", "buffer_size=10"], "batch_size=20 > buffer_size=10: qmix (learner: q_learner) samples "
     "batch_size episodes from a replay buffer of buffer_size episodes, so it would never train; use buffer_size >= "
     "20"),
    ("mappo", ["batch_size=20"], "batch_size=20 > buffer_size=10: mappo (learner: ppo_learner) trains on the latest"),
    # settings that were silently ignored or overwritten
    ("qmix", ["load_step=100"], "load_step=100 picks a checkpoint of checkpoint_path, which is not given"),
    ("qmix", ["env_args.seed=abc"], "env_args.seed='abc' is set by the run from seed= (parallel env i gets seed + i): "
     "use seed=<integer> instead of env_args.seed"),
    ("qmix", ["rnn_hidden_dim=32", "hidden_dim=16"], "rnn_hidden_dim=32 and hidden_dim=16 set the same key "
     "'hidden_dim'"),
    ("qmix", ["name="], "config key 'name' must not be empty"),
    ("qmix", ["env_args.episode_limit=0"], "env_args.episode_limit for matrix_game must be an integer >= 1 (steps per "
     "episode); got 0"),
    ("qmix", ["env_args.episode_limit=abc"], "env_args.episode_limit for matrix_game must be an integer >= 1"),
    ("qmix", ["env_args.episode_limit=True"], "env_args.episode_limit for matrix_game must be an integer >= 1"),
    ("qmix", ["env_args.episode_limit=2.5"], "got 2.5"),
    ("qmix", ["env_args.game=chicken"], "env_args.game for matrix_game must be one of climbing, penalty; got "
     "'chicken'"),
])
def test_core_settings_and_combinations_fail_before_the_run(tmp_path, capsys, alg, updates, message):
    """One line naming the key, the value and the fix, exit status 2, no run or TensorBoard folder."""
    err = cli(tmp_path, capsys, "with", *updates, alg=alg)
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_empty_results_path_is_refused(capsys):
    assert main(["main.py", "--config=qmix", "--env-config=matrix_game", "with", "local_results_path="]) == 2
    assert "config key 'local_results_path' must not be empty" in capsys.readouterr().err


def test_test_nepisode_records_the_episodes_that_ran(tmp_path, capsys):
    """Evaluations run whole rounds of batch_size_run envs: test_nepisode=3 with 2 envs runs 2 episodes, says so once
    and config.json records 2, not the 3 given."""
    import json

    assert main(["main.py", "--config=ippo", "--env-config=matrix_game", "with", f"local_results_path={tmp_path}",
                 "t_max=0", "batch_size_run=2", "n_workers=1", "test_nepisode=3", "use_tensorboard=False",
                 "save_model=False", "hidden_dim=16", "env_args.episode_limit=3", "hidden_dim=8"]) == 0
    err = capsys.readouterr().err
    # a repeated key: the last wins, as in Sacred and epymarl, said once
    assert err.count("'hidden_dim' is given twice (hidden_dim=16, then hidden_dim=8): the last, 8, is used") == 1
    assert err.count("test_nepisode=3 is not a multiple of batch_size_run=2: each evaluation runs 2 test episodes") == 1
    (run,) = [os.path.join(d, "1") for d in (tmp_path / "sacred" / "ippo").iterdir()]
    assert json.load(open(os.path.join(run, "config.json")))["test_nepisode"] == 2
    assert json.load(open(os.path.join(run, "config.json")))["hidden_dim"] == 8
    # said before Sacred's capture started, yet in cout.txt, which holds the whole console log: first, and once
    cout = open(os.path.join(run, "cout.txt")).read()
    assert cout.splitlines()[0] == err.splitlines()[0] and "is not a multiple of batch_size_run" in cout.splitlines()[0]
    assert cout.count("is not a multiple of batch_size_run") == 1


@pytest.mark.parametrize("path", ["/path/to/file.yaml", "my.json"])
def test_a_config_file_given_to_with_says_what_to_do_instead(tmp_path, capsys, path):
    err = cli(tmp_path, capsys, "with", path)
    assert f"'{path}': config files given to `with` are not supported; put the settings in config/algs/<name>.yaml " \
           f"and use --config=<name>" in err


def test_env_args_null_is_a_config_error_before_the_run(tmp_path, capsys):
    err = cli(tmp_path, capsys, "with", "env_args.time_limit=null", env="lbf")
    assert "config key 'env_args.time_limit' must be an integer >= 1 (steps per episode); got None" in err


@pytest.mark.parametrize("env, update, message", [
    ("lbf", "env_args.state=null", "lbf: env_args.state must be one of ('qllm', 'obs'), got None"),
    ("mpe_spread", "env_args.local_ratio=2", "mpe: local_ratio must be null or in [0, 1], got 2"),
    ("pistonball", "env_args.n_pistons=1", "pistonball: n_pistons must be an integer >= 2, got 1"),
    ("two_switch", "env_args.step_penalty=lots", "two_switch: step_penalty must be one of"),
])
def test_a_bad_env_value_found_by_the_env_fails_in_one_line_with_no_run_folder(tmp_path, capsys, env, update,
                                                                               message):
    """The env's own constructor checks (EnvValueError, a ConfigError): one line, exit 2, nothing written."""
    err = cli(tmp_path, capsys, "with", update, "t_max=50", env=env)
    assert f"config error: {message}" in err and "Traceback" not in err
