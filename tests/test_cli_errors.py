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
