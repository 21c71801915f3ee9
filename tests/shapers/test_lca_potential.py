"""LCA potentials (shapers/lca/potential.py, train.py): the confidence-weighted Bradley-Terry loss recovers orders and
soft labels, shared models never see identity fields, training is seeded, and the artifact folder is verified when
loaded (env, agent count, encoder spec, SHA-256, NaN) and reused by a rerun."""
import json
import logging
import os

import numpy as np
import pytest
import torch as th
from lca_helpers import TWO_SWITCH_ARGS, fast, make_rankings, one_hot

from helpers import run_main, sacred_dir
from run.shape import run_shape
from shapers.lca import train as lca_train
from shapers.lca.potential import Potential, bt_loss, encoder_spec
from shapers.lca.rankings import write_rankings
from shapers.lca.train import (
    artifact_folder,
    load_artifact,
    read_meta,
    train_or_reuse,
    train_potentials,
    write_artifact,
)
from utils.config import ConfigError, build_config


def chain_rankings(n=10, votes=2, seed=0):
    """Every pair of a 10-state chain (one-hot states), in a random direction, voted unanimously for the later one."""
    i, j = np.triu_indices(n, 1)
    flip = np.random.default_rng(seed).random(len(i)) < 0.5
    a, b = np.where(flip, j, i), np.where(flip, i, j)
    answers = np.repeat((b > a).astype(np.float32)[:, None], votes, 1)
    return make_rankings(one_hot(a, n), one_hot(b, n), answers, oracle=(b > a).astype(np.float32))


def test_a_tabular_chain_is_recovered_in_order():
    result = train_potentials(chain_rankings(), fast(epochs=150))
    scores = result.models["all"](th.eye(10)).detach().numpy()
    assert np.all(np.diff(scores) > 0), scores
    assert result.metrics["pooled"]["train_oracle_agreement"] == 1.0


def test_soft_labels_set_the_score_difference():
    # a 2-2 vote (the fifth query unanswered) and a 4-1 vote (p = 0.8) on two separate pairs of a tabular model
    answers = np.array([[1, 1, 0, 0, np.nan], [1, 1, 1, 1, 0]], np.float32)
    result = train_potentials(make_rankings(one_hot([0, 2], 4), one_hot([1, 3], 4), answers), fast(epochs=400))
    s = result.models["all"](th.eye(4)).detach().numpy()
    assert abs(s[1] - s[0]) < 0.05
    assert abs((s[3] - s[2]) - np.log(0.8 / 0.2)) < 0.1


def test_the_weighted_loss_equals_the_loss_on_duplicated_hard_rows():
    rng = np.random.default_rng(0)
    K, P = 4, 50
    delta = th.as_tensor(rng.normal(0, 2, P))
    yes = th.as_tensor(rng.integers(0, K + 1, P))
    soft = bt_loss(delta, yes / K).mean()
    hard_labels = th.stack([(th.arange(K) < k).double() for k in yes])  # k answers 1, K - k answers 0
    hard = bt_loss(delta.repeat_interleave(K), hard_labels.reshape(-1)).mean()
    assert th.allclose(soft, hard, atol=1e-12)
    # and the rankings' p_helps is that soft label
    answers = hard_labels.numpy().astype(np.float32)
    r = make_rankings(np.zeros((P, 1)), np.zeros((P, 1)), answers)
    assert np.allclose(r.p_helps, yes.numpy() / K)


def test_the_head_is_linear_so_scores_can_be_negative():
    model = Potential(3, 8)
    assert isinstance(model.net[-1], th.nn.Linear)
    with th.no_grad():
        model.net[-1].bias.fill_(-5.0)
        model.net[-1].weight.zero_()
    assert (model(th.randn(4, 3)) == -5.0).all()


def identity_rankings(n_agents=2, P=40, seed=0):
    """Rows of a 2-agent env whose observations hold a role one-hot at dims 2, 3."""
    rng = np.random.default_rng(seed)
    agent = rng.integers(0, n_agents, P)
    obs, next_obs = rng.normal(size=(P, 5)), rng.normal(size=(P, 5))
    for o in (obs, next_obs):
        o[:, 2:4] = one_hot(agent, 2)
    answers = (next_obs[:, 0] > obs[:, 0]).astype(np.float32)[:, None]
    return make_rankings(obs, next_obs, answers, agent=agent, n_agents=2, groups=["pair"], agent_groups=[0, 0],
                         identity_dims=[2, 3])


def test_no_identity_field_reaches_a_shared_model():
    r = identity_rankings()
    shared = train_potentials(r, fast(epochs=5, groups="auto"))
    assert shared.spec["inputs"]["pair"] == [0, 1, 4] and shared.spec["dropped"]["pair"] == [2, 3]
    assert shared.models["pair"].net[0].in_features == 3
    assert train_potentials(r, fast(epochs=5, groups="shared")).models["shared"].net[0].in_features == 3
    per_agent = train_potentials(r, fast(epochs=5, groups="per_agent"))  # a model of one agent keeps them
    assert [per_agent.models[f"agent{i}"].net[0].in_features for i in (0, 1)] == [5, 5]
    spec = encoder_spec({**r.attrs, "groups": ["healer", "remover"], "agent_groups": [0, 1]}, "auto")
    assert spec["inputs"] == {"healer": [0, 1, 2, 3, 4], "remover": [0, 1, 2, 3, 4]}


def test_training_is_seeded_and_bit_reproducible():
    r = identity_rankings(P=60)
    settings = fast(epochs=20, valid_fraction=0.2, batch_size=16)
    a, b = (train_potentials(r, settings).models["pair"].state_dict() for _ in range(2))
    assert all(th.equal(a[k], b[k]) for k in a)
    c = train_potentials(r, fast(epochs=20, valid_fraction=0.2, batch_size=16, seed=1)).models["pair"].state_dict()
    assert not all(th.equal(a[k], c[k]) for k in a)


def test_noisy_votes_early_stopping_and_the_reported_agreements():
    # 2-d states whose true potential is x0; 4 votes per pair, each right with probability 0.8
    rng = np.random.default_rng(1)
    P = 400
    obs, next_obs = rng.uniform(-1, 1, (P, 2)), rng.uniform(-1, 1, (P, 2))
    truth = next_obs[:, 0] > obs[:, 0]
    answers = np.where(rng.random((P, 4)) < 0.8, truth[:, None], ~truth[:, None]).astype(np.float32)
    r = make_rankings(obs, next_obs, answers, oracle=truth.astype(np.float32))
    m = train_potentials(r, fast(epochs=300, valid_fraction=0.1, patience=10, lr=3e-3, batch_size=64,
                                 normalise="pair_std")).metrics["pooled"]
    g = train_potentials(r, fast(epochs=300, valid_fraction=0.1, patience=10, lr=3e-3, batch_size=64,
                                 normalise="pair_std")).metrics["pooled"]
    assert m == g
    assert m["n_valid"] == 40 and m["n_train"] == 360
    assert m["valid_oracle_agreement"] >= 0.9
    assert 0.5 < m["valid_vote_agreement"] <= 1.0


def test_early_stopping_stops_and_keeps_the_best_weights():
    r = chain_rankings(votes=1)
    r.answers[::3] = 1 - r.answers[::3]  # a third of the votes wrong: the validation loss turns up
    group = train_potentials(r, fast(epochs=400, valid_fraction=0.3, patience=5)).metrics["groups"]["all"]
    assert group["epochs"] < 400 and group["best_epoch"] == group["epochs"] - 5
    assert group["n_valid"] == round(0.3 * 45)


def test_pair_std_normalisation_is_stored():
    r = chain_rankings()
    result = train_potentials(r, fast(epochs=50, normalise="pair_std"))
    delta = (result.models["all"](th.as_tensor(r.next_obs)) - result.models["all"](th.as_tensor(r.obs))).detach()
    assert result.scales["all"] == pytest.approx(float(delta.numpy().astype(np.float64).std()), rel=1e-5)
    assert train_potentials(r, fast(epochs=50, normalise="none")).scales["all"] == 1.0


def test_nan_observations_are_refused():
    r = chain_rankings()
    r.obs[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN scores.*lca.lr"):
        train_potentials(r, fast(epochs=3))


def test_rows_without_votes_are_skipped_and_a_group_without_any_is_refused():
    r = chain_rankings()
    r.answers[:5] = np.nan
    assert train_potentials(r, fast(epochs=2)).metrics["pooled"]["n_train"] == 40
    r.answers[:] = np.nan
    with pytest.raises(ValueError, match="no ranked rows with a vote"):
        train_potentials(r, fast(epochs=2))


# -------------------------------------------------------------------------------------------------- artifacts
def write_chain(tmp_path, env="chain", env_args=None, name="rankings.h5"):
    path = str(tmp_path / name)
    r = chain_rankings()
    r.attrs.update(env=env, env_args=env_args or {})
    write_rankings(path, r)
    return path


def test_the_artifact_round_trips_and_a_rerun_reuses_it(tmp_path, monkeypatch):
    path = write_chain(tmp_path)
    settings = fast(epochs=30, normalise="pair_std")
    folder, meta, reused = train_or_reuse(path, settings, str(tmp_path / "results"))
    assert not reused and folder == artifact_folder(str(tmp_path / "results"), "chain", {}, os.path.basename(folder))
    assert sorted(os.listdir(folder)) == ["meta.json", "potential_all.pt"]
    assert meta["rankings"]["sha256"] and meta["encoder"]["groups"] == ["all"] and meta["n_agents"] == 1
    loaded = load_artifact(folder, env="chain", env_args={}, n_agents=1, obs_shape=10, identity_dims=[])
    assert loaded.sha256 == meta["potential_sha256"] == read_meta(folder)["potential_sha256"]
    again = train_potentials(lca_train.read_rankings(path), settings).models["all"]
    x = th.eye(10)
    assert th.equal(loaded.models["all"](x), again(x)) and loaded.scales["all"] == meta["normalisation"]["scale"]["all"]
    monkeypatch.setattr(lca_train, "train_potentials", lambda *a, **k: pytest.fail("trained again"))
    assert train_or_reuse(path, settings, str(tmp_path / "results"))[:3:2] == (folder, True)


def test_incomplete_rankings_are_refused_unless_allowed_and_so_is_their_cached_potential(tmp_path, caplog,
                                                                                        monkeypatch):
    """A labeling stopped early (attrs complete: false, 5 of 45 items answered) trains nothing, naming the count and
    how to finish it; lca.allow_incomplete trains on the answered items (meta says so), and that cached potential is
    refused again without the opt-in."""
    # the run's logger stops propagating once a run has set it up (utils.logging), which an earlier test may have
    monkeypatch.setattr(logging.getLogger("pymarl"), "propagate", True)
    path = str(tmp_path / "rankings.h5")
    r = chain_rankings()
    r.answers[5:] = np.nan
    r.attrs.update(complete=False, labeler_info={"stopped": "max_requests=5 reached"})
    write_rankings(path, r)
    results = str(tmp_path / "results")
    refused = (r"the rankings .* are incomplete: 5 of 45 items answered \(80 of 90 answers missing; the labeling "
               r"stopped: max_requests=5 reached\)\. Finish them: rerun the command that ranked them.*asks only the "
               r"missing queries; or set lca.allow_incomplete=True to train on the 5 answered items")
    with pytest.raises(ConfigError, match=refused):
        train_or_reuse(path, fast(epochs=3), results)
    folder, meta, reused = train_or_reuse(path, fast(epochs=3), results, allow_incomplete=True)
    assert not reused and meta["rankings"]["complete"] is False and meta["metrics"]["pooled"]["n_train"] == 5
    assert "5 of 45 items answered" in caplog.text and "lca.allow_incomplete=True" in caplog.text
    with pytest.raises(ConfigError, match=refused):  # the cached potential is not reused silently either
        train_or_reuse(path, fast(epochs=3), results)
    assert train_or_reuse(path, fast(epochs=3), results, allow_incomplete=True)[::2] == (folder, True)


def test_other_settings_make_another_artifact(tmp_path):
    path = write_chain(tmp_path)
    a = train_or_reuse(path, fast(epochs=3), str(tmp_path))[0]
    b = train_or_reuse(path, fast(epochs=4), str(tmp_path))[0]
    assert a != b and os.path.dirname(a) == os.path.dirname(b)


@pytest.fixture
def artifact(tmp_path):
    path = write_chain(tmp_path, env="two_switch", env_args=dict(TWO_SWITCH_ARGS, seed=5))
    return train_or_reuse(path, fast(epochs=3), str(tmp_path))[0]


@pytest.mark.parametrize("expect, message", [
    ({"env": "victim_rubble"}, "env: trained on two_switch, this run has victim_rubble"),
    ({"env_args": dict(TWO_SWITCH_ARGS, episode_limit=50)}, "env_args: trained with"),
    ({"n_agents": 3}, "agent count: trained for 1 agents, this run has 3"),
    ({"obs_shape": 11}, r"encoder spec: trained on observations of shape \[10\], this run's are \[11\]"),
    ({"identity_dims": [4]}, r"encoder spec: trained with identity fields at \[\]"),
])
def test_a_potential_of_another_env_or_encoding_is_refused(artifact, expect, message):
    with pytest.raises(ValueError, match=message + ".*--config=lca_potential"):
        load_artifact(artifact, **expect)


def test_the_run_arguments_do_not_count_as_another_env(artifact):
    load_artifact(artifact, env="two_switch", env_args=dict(TWO_SWITCH_ARGS, seed=1, common_reward=False))


def test_a_tampered_potential_is_refused(artifact):
    pt = os.path.join(artifact, "potential_all.pt")
    state = th.load(pt, weights_only=True)
    state["net.4.bias"] += 1.0
    th.save(state, pt)
    with pytest.raises(ValueError, match="tampered.*SHA-256"):
        load_artifact(artifact)


def test_nan_weights_are_refused(tmp_path, artifact):
    meta = read_meta(artifact)
    model = Potential(10, meta["model"]["hidden_dim"])
    with th.no_grad():
        model.net[0].weight[0, 0] = float("nan")
    folder = str(tmp_path / "nan")
    write_artifact(folder, {"all": model}, {k: v for k, v in meta.items() if k not in ("files", "sha256")})
    with pytest.raises(FloatingPointError, match="NaN"):
        load_artifact(folder)


def test_a_missing_folder_names_the_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config=lca_potential"):
        load_artifact(str(tmp_path / "nothing"))


def test_run_shape_trains_writes_and_reuses(tmp_path):
    path = write_chain(tmp_path, env="two_switch", env_args=TWO_SWITCH_ARGS)
    updates = [f"lca.rankings={path}", "lca.epochs=5", "lca.hidden_dim=8"]
    # chain rows labelled as Two-Switch: its oracle-episode check refuses them (they are not its observations)
    with pytest.raises(ValueError, match="hold 1 agents with observations .*lca.check_episodes=0"):
        run_shape(None, shape_config(tmp_path, rankings=path, epochs=5, hidden_dim=8), logging.getLogger("test"))
    updates.append("lca.check_episodes=0")
    run_main(tmp_path, "lca_potential", "two_switch", *updates)
    info = json.load(open(os.path.join(sacred_dir(tmp_path, "lca_potential", "two_switch"), "info.json")))
    shaped = info["lca_potential"]
    assert not shaped["reused"] and os.path.isfile(os.path.join(shaped["folder"], "meta.json"))
    assert shaped["folder"].startswith(str(tmp_path / "potentials" / "two_switch"))
    assert set(shaped["metrics"]["pooled"]) >= {"valid_vote_agreement", "valid_oracle_agreement"}
    assert shaped["metrics"]["pooled"]["n_valid"] == round(0.1 * 45)
    run_main(tmp_path / "again", "lca_potential", "two_switch", *updates, f"local_results_path={tmp_path}")
    runs = sorted(d for d in os.listdir(tmp_path / "sacred" / "lca_potential" / "two_switch") if d.isdigit())
    info = json.load(open(tmp_path / "sacred" / "lca_potential" / "two_switch" / runs[-1] / "info.json"))
    assert info["lca_potential"]["reused"] and info["lca_potential"]["folder"] == shaped["folder"]


def shape_config(tmp_path, **lca):
    return build_config("lca_potential", "two_switch", {"local_results_path": str(tmp_path), "lca": lca})


def test_run_shape_refuses_missing_or_foreign_rankings(tmp_path):
    with pytest.raises(ConfigError, match="lca.rankings=.*--config=lca_label"):
        run_shape(None, shape_config(tmp_path), logging.getLogger("test"))
    path = write_chain(tmp_path, env="victim_rubble")
    with pytest.raises(ValueError, match="env victim_rubble.*this run has env two_switch"):
        run_shape(None, shape_config(tmp_path, rankings=path), logging.getLogger("test"))
    assert run_main(tmp_path, "lca_potential", "two_switch", expect=2) is None  # a config error: exit code 2
