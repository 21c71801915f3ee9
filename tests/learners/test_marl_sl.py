"""MARL-SL: a Bradley-Terry team reward model from preferences (step 1, --config=marl_sl) whose reward label OMIGA
trains on (step 2, offline_reward=label:<set>_reward_hat)."""
import glob
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from preference_fixtures import add_preference_set, oracle_pairs, write_skill_dataset

from helpers import make_ctx, run_main, sacred_dir
from offline import OfflineDataset
from offline.format import DatasetError
from offline.preferences import load_preferences
from offline.sampling import Sampler, label_rows

TINY = ["offline_steps=4", "offline_test_interval=2", "offline_log_interval=2", "offline_save_interval=2",
        "preference_batch_size=8", "test_nepisode=2", "env_args.episode_limit=5", "hidden_dim=16",
        "marl_sl_hidden_dim=32", "topk_expert=10", "preference_set=oracle"]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    path = write_skill_dataset(tmp_path_factory.mktemp("data") / "mix.h5", 40, 160)
    pairs, label = oracle_pairs(OfflineDataset.load(path).returns, 300)
    add_preference_set(path, "oracle", pairs, label)
    return path


def test_reward_model_ranks_like_the_true_return(mixture):
    th.manual_seed(0)
    ctx = make_ctx("marl_sl", "climbing", seed=0, env_args={"episode_limit": 5}, preference_set="oracle",
                   marl_sl_hidden_dim=32, topk_expert=40, lr=3e-3, learner_log_interval=10**9)
    ds = OfflineDataset.load(mixture)
    prefs, sampler = load_preferences(ds, "oracle", 0.5), Sampler(0)
    for step in range(150):
        ctx.learner.train({"preferences": sampler.pairs(prefs, 16, "cpu")}, step, 0)
    result = ctx.learner.label_dataset(ds, 150)
    assert result["info"]["sum"]["spearman_true_return"] >= 0.7 and result["info"]["sum"]["precision"] >= 0.8
    r_hat = result["labels"]["oracle_reward_hat"]
    assert r_hat.shape == (200, 6, 1) and (r_hat[:, 5] == 0).all()  # the final-state row is no transition
    # the training logits are the differences of the summed label
    logits = ctx.learner.preference_logits(prefs.batch(np.arange(5)))[0].detach().numpy()
    g = r_hat.sum(axis=(1, 2))
    np.testing.assert_allclose(logits, g[prefs.pairs[:5, 0]] - g[prefs.pairs[:5, 1]], rtol=1e-4, atol=1e-4)


def test_marl_sl_then_omiga_on_the_learned_reward(tmp_path, mixture, capsys):
    data = str(tmp_path / "data.h5")
    shutil.copyfile(mixture, data)
    run_main(tmp_path / "sl", "marl_sl", "climbing", f"offline_dataset={data}", *TINY)
    info = json.load(open(os.path.join(sacred_dir(tmp_path / "sl", "marl_sl", "climbing"), "info.json")))
    assert info["labels"]["names"] == ["oracle_reward_hat"] and "spearman_true_return" in info["labels"]["sum"]
    assert not [k for k in info if k.startswith("test_")]  # its actor is untrained: no test episodes (trains_actor)
    (model,) = glob.glob(os.path.join(tmp_path / "sl", "models", "*"))
    capsys.readouterr()
    run_main(tmp_path / "sl", "marl_sl", "climbing", f"offline_dataset={data}", *TINY, "evaluate=True",
             f"checkpoint_path={model}", expect=1)
    assert "trains no policy, so there is nothing to evaluate" in capsys.readouterr().err
    ds = OfflineDataset.load(data)
    r_hat = ds.label("oracle_reward_hat")
    assert r_hat.shape == (200, 6, 1) and np.isfinite(r_hat).all()

    # step 2: OMIGA reads the label in place of the dataset's rewards
    args = SimpleNamespace(offline_reward="label:oracle_reward_hat")
    replaced = ds.with_reward(label_rows(ds, args.offline_reward, "offline_reward", ""))
    np.testing.assert_array_equal(replaced.arrays([3, 7])["reward"], r_hat[[3, 7]])
    np.testing.assert_array_equal(replaced.arrays([3])["obs"], ds.arrays([3])["obs"])
    run_main(tmp_path / "omiga", "omiga", "climbing", f"offline_dataset={data}", "offline_steps=2",
             "offline_test_interval=2", "batch_size=4", "test_nepisode=2", "env_args.episode_limit=5",
             "hidden_dim=16", "critic_hidden_dim=32", "offline_reward=label:oracle_reward_hat")

    capsys.readouterr()
    run_main(tmp_path / "missing", "omiga", "climbing", f"offline_dataset={data}", "offline_steps=2",
             "env_args.episode_limit=5", "offline_reward=label:llm_reward_hat", expect=2)
    err = capsys.readouterr().err
    assert "no label 'llm_reward_hat' (labels present: ['oracle_reward_hat'])" in err and "--config=marl_sl" in err


def test_a_reward_label_of_the_wrong_shape_is_refused(mixture):
    ds = OfflineDataset.load(mixture)
    with pytest.raises(DatasetError, match=r"shape \(200, 6, 1\)"):
        ds.with_reward(np.zeros((200, 6)))
