"""Shipped reference TFCAFs (src/qllm/tfcafs): one per env config, correct on the env's real states.

Parametrised over config/envs (except gymma), so a new env config fails here until it gets a reference.
Each reference runs on ~200 states from random rollouts of its env (first states, steps, last states) plus
edge states built from the env's state schema (collected food, dead units, no controlled player, zeros):
shapes, finite values, determinism, no in-place change of the input, gradient flow from
Q_tot = sum_i w_i Q_i + b to the agent Qs, non-negative weights where the manifest says igm_gate, and a
credit check per env family that reads the state through the env's schema (not through the reference's own
indices). StarCraft II cannot run here: sc2/sc2v2 get synthetic states laid out by envs/smac.py's schema for
the configs' maps. The manifest must match the files, and every reference must pass the sandboxed validator.
"""
import functools
import hashlib
import importlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from envs import make_env
from envs.description import check_schema
from helpers import require_extra
from qllm.records import manifest_json as dumps
from qllm.records import manifest_path
from qllm.records import read_manifest as load_manifest
from qllm.records import shipped_reference as reference
from qllm.tfcafs.manifest import HEADER, KNOWN_SIZES, build_manifest, file_for, reference_configs
from utils.config import load_yaml

CONFIGS = reference_configs()
STARCRAFT = {"sc2", "sc2v2"}
OPTIONAL = {"smax": ("jaxmarl", "./install.sh smax"), "gfootball": ("gfootball", "./install.sh football")}
N_STATES = 200
EPISODE_CAP = 40  # steps per rollout episode, so that ~200 states span several episodes
SMAC_TEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "envs", "test_smac.py")


def manifest_entry(name):
    """The manifest's entry for an env config; a config without a reference TFCAF yet fails naming what to add
    (a bare KeyError named only the config)."""
    manifest = load_manifest()
    if name not in manifest:
        pytest.fail(f"env config '{name}' has no reference TFCAF in {manifest_path()}: write "
                    f"src/qllm/tfcafs/{file_for(name)}.py (or share a family's file through SHARED in "
                    f"src/qllm/tfcafs/manifest.py), then rebuild the manifest with "
                    f"`cd src && ../.venv/bin/python -m qllm.tfcafs.manifest` (docs/adding-an-env.md, section 5)")
    return manifest[name]


def tfcaf_of(name):
    return importlib.import_module(f"qllm.tfcafs.{file_for(name)}").tfcaf


def schema(fields):
    return {f.name: slice(f.start, f.end) for f in fields}


# ----------------------------------------------------------------------------------------------------------
# states


@functools.lru_cache(maxsize=None)
def smac_env(name):
    """envs.smac's wrapper around tests/envs/test_smac.py's stand-in for StarCraft2Env (schema arithmetic only,
    no game), with the flags of the config's map."""
    spec = importlib.util.spec_from_file_location("smac_schema_stand_in", SMAC_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from envs.smac import SMACEnv, SMACv2Env

    if name == "sc2":
        assert load_yaml("envs", name)["env_args"]["map_name"] == "3m"
        return SMACEnv.wrap(module.FakeStarCraft2Env("3m", 3, 3, "TT", 0, "marines", 60))
    cfg = load_yaml("envs", name)["env_args"]
    assert cfg["map_name"] == "10gen_protoss" and not cfg["conic_fov"]
    units = cfg["capability_config"]["n_units"]
    return SMACv2Env.wrap(module.FakeStarCraft2Env("10gen_protoss", units, cfg["capability_config"]["n_enemies"],
                                                   "PP", 3, "protoss_gen", 200))


def synthetic_smac_states(env, n, seed=0):
    """States laid out by the SMAC schema: random live units, some dead (all 0), one-hot types and actions."""
    rng = np.random.default_rng(seed)
    fields = env.state_schema()
    states = np.zeros((n, env.get_state_size()), dtype=np.float32)
    units = sorted({f.name.split(".")[0] for f in fields if not f.name.endswith("last_action")})
    for row in range(n):
        for unit in units:
            if rng.random() < 0.2:
                continue  # dead: every value 0
            for f in (f for f in fields if f.name.startswith(unit + ".") and not f.name.endswith("last_action")):
                kind = f.name.split(".")[1]
                if kind == "health":
                    states[row, f.start] = rng.uniform(0.05, 1.0)
                elif kind == "cooldown":
                    states[row, f.start] = 0.0 if rng.random() < 0.5 else rng.uniform(0, 1)
                elif kind == "position":
                    states[row, f.start:f.end] = rng.uniform(-0.3, 0.3, f.size)
                elif kind == "shield":
                    states[row, f.start] = rng.uniform(0, 1)
                elif kind == "unit_type":
                    states[row, f.start + rng.integers(f.size)] = 1.0
        for f in (f for f in fields if f.name.endswith("last_action")):
            if row % 7:
                states[row, f.start + rng.integers(f.size)] = 1.0
    return states


def edge_states(env, states):
    """Edge cases built through the schema from sampled states, per env family."""
    fields = {f.name: f for f in env.state_schema()}
    base = states[: min(8, len(states))].copy()
    out = [np.zeros_like(base[:1])]
    names = list(fields)
    if any(n.startswith("food_") for n in names):  # LBF: all food collected, first step
        done = base.copy()
        for n in names:
            if n.startswith("food_"):
                done[:, fields[n].start:fields[n].end] = (-1.0, -1.0, 0.0)
        done[:, fields["last_actions"].start:fields["last_actions"].end] = -1.0
        out.append(done)
    if any(n.endswith(".health") for n in names):  # SMAX / SMAC: ally 0 dead, all allies dead, all enemies dead
        for dead_units in (("ally_0",), ("ally_",), ("enemy_",)):
            dead = base.copy()
            for n, f in fields.items():
                unit = n.split(".")[0]
                if "." in n and not n.endswith("last_action") and any(unit.startswith(u) for u in dead_units):
                    dead[:, f.start:f.end] = 0.0
            out.append(dead)
    if any(n.endswith(".active_player") for n in names):  # football: no player controlled, nobody owns the ball
        loose = base.copy()
        for n, f in fields.items():
            if n.endswith(".active_player"):
                loose[:, f.start:f.end] = 0.0
            if n.endswith(".ball_owner"):
                loose[:, f.start:f.end] = (1.0, 0.0, 0.0)
        out.append(loose)
    return np.concatenate(out)


@functools.lru_cache(maxsize=None)
def sample(name):
    """(env or SMAC schema stand-in, states [N, S] float32) for an env config; skips if its extra is missing."""
    cfg = load_yaml("envs", name)
    if name in STARCRAFT:
        env = smac_env(name)
        states = synthetic_smac_states(env, N_STATES)
        return env, np.concatenate([states, edge_states(env, states)])
    if cfg["env"] in OPTIONAL:
        require_extra(*OPTIONAL[cfg["env"]])
    env = make_env(cfg["env"], **cfg["env_args"], seed=0, common_reward=True, reward_scalarisation="sum")
    rng = np.random.default_rng(0)
    states = []
    while len(states) < N_STATES:
        env.reset()
        states.append(np.asarray(env.get_state(), dtype=np.float32))
        for _ in range(EPISODE_CAP):
            avail = np.asarray(env.get_avail_actions())
            _, terminated, info = env.step([int(rng.choice(np.flatnonzero(a))) for a in avail])
            states.append(np.asarray(env.get_state(), dtype=np.float32))
            if terminated or info.get("episode_limit"):
                break
    states = np.stack(states)
    env.close()
    return env, np.concatenate([states, edge_states(env, states)])


def run(name, states):
    return tfcaf_of(name)(torch.as_tensor(states), manifest_entry(name)["n_agents"])


# ----------------------------------------------------------------------------------------------------------
# contract


@pytest.mark.parametrize("name", CONFIGS)
def test_reference_honours_the_tfcaf_contract(name):
    entry = manifest_entry(name)
    env, states = sample(name)
    n, size = entry["n_agents"], entry["state_size"]
    assert states.shape[1] == size == env.get_state_size() and n == env.n_agents
    check_schema(env.state_schema(), size)
    x = torch.as_tensor(states)
    before = x.clone()
    weights, bias = tfcaf_of(name)(x, n)
    assert weights.shape == (len(states), n) and bias.shape == (len(states), 1)
    assert weights.dtype == bias.dtype == torch.float32
    assert torch.isfinite(weights).all() and torch.isfinite(bias).all()
    assert torch.equal(x, before), "the reference changed its input in place"
    if entry["igm_gate"]:
        assert (weights >= 0).all(), "igm_gate references must return non-negative weights"
    assert weights.abs().max() < 20 and bias.abs().max() < 1e3  # moderate scale (prompt rule 7)

    again_w, again_b = tfcaf_of(name)(x, n)
    assert torch.equal(weights, again_w) and torch.equal(bias, again_b)
    one_w, one_b = tfcaf_of(name)(x[3:4], n)  # rows are independent; B = 1 works
    assert torch.allclose(one_w, weights[3:4]) and torch.allclose(one_b, bias[3:4])
    assert weights.std(dim=0).max() > 1e-3, "the weights never change with the state"

    # gradient flow from Q_tot to the agent utilities, with the framework's gate
    qs = torch.randn(len(states), n, requires_grad=True)
    w = weights.abs() if entry["igm_gate"] else weights
    q_tot = (w * qs).sum(dim=1, keepdim=True) + bias
    q_tot.sum().backward()
    assert torch.allclose(qs.grad, w) and (qs.grad.abs() > 0).any()


@pytest.mark.parametrize("name", CONFIGS)
def test_reference_is_finite_on_states_no_env_produces(name):
    entry = manifest_entry(name)
    rng = np.random.default_rng(1)
    for scale in (1.0, 30.0, 1e4):
        noise = (rng.standard_normal((64, entry["state_size"])) * scale).astype(np.float32)
        weights, bias = run(name, noise)
        assert torch.isfinite(weights).all() and torch.isfinite(bias).all(), scale


# ----------------------------------------------------------------------------------------------------------
# credit semantics, read through each env's schema


def within_row_correlation(w, x):
    w, x = w - w.mean(1, keepdims=True), x - x.mean(1, keepdims=True)
    return float((w * x).sum() / np.sqrt((w * w).sum() * (x * x).sum() + 1e-12))


def lbf_food_distance(f, states, n):
    foods = [k for k in f if k.startswith("food_")]
    dist = np.full((len(states), n), 1e3)
    for i in range(n):
        row, col = states[:, f[f"agent_{i}"]][:, 0], states[:, f[f"agent_{i}"]][:, 1]
        for k in foods:
            food = states[:, f[k]]
            d = np.abs(row - food[:, 0]) + np.abs(col - food[:, 1])
            dist[:, i] = np.minimum(dist[:, i], np.where(food[:, 2] > 0, d, 1e3))
    return dist


def test_lbf_credit_follows_proximity_to_food():
    env, states = sample("lbf_2s_10x10_3p_3f")
    f, n = schema(env.state_schema()), env.n_agents
    dist = lbf_food_distance(f, states, n)
    some = (dist < 1e3).all(1)
    weights = run("lbf_2s_10x10_3p_3f", states)[0].numpy()
    assert within_row_correlation(weights[some], dist[some]) < -0.3
    # an agent next to food that it is loading gets the most credit
    state = states[0].copy()
    food = state[f["food_0"]]
    state[f["food_0"]] = (food[0], food[1], 1.0)
    state[f["agent_0"]] = (food[0] + (1 if food[0] < 9 else -1), food[1], 2.0)
    last = f["last_actions"]
    state[last.start] = 5.0
    w = run("lbf_2s_10x10_3p_3f", state[None])[0][0]
    assert w.argmax() == 0


def test_lbf_all_food_collected_gives_equal_credit():
    env, states = sample("lbf_8x8_2p_2f_coop")
    f = schema(env.state_schema())
    done = states[:5].copy()
    for k in ("food_0", "food_1"):
        done[:, f[k]] = (-1.0, -1.0, 0.0)
    weights = run("lbf_8x8_2p_2f_coop", done)[0]
    assert torch.allclose(weights, torch.ones_like(weights))


@pytest.mark.parametrize("name", ["mpe_spread", "mpe_spread_6"])
def test_mpe_spread_credit_follows_closeness_to_landmarks(name):
    env, states = sample(name)
    f, n = schema(env.state_schema()), env.n_agents
    nearest = np.stack([np.linalg.norm(states[:, f[f"agent_{i}.landmarks_rel"]].reshape(-1, n, 2), axis=-1).min(1)
                        for i in range(n)], axis=1)
    weights = run(name, states)[0].numpy()
    assert within_row_correlation(weights, nearest) < -0.5


@pytest.mark.parametrize("name", ["mpe_tag", "mpe_world"])
def test_mpe_predator_credit_follows_proximity_to_prey(name):
    env, states = sample(name)
    f, n = schema(env.state_schema()), env.n_agents
    n_prey = load_yaml("envs", name)["env_args"]["num_good"]
    obstacles = f["predator_0.obstacles_rel"]
    assert obstacles.stop - obstacles.start == 2 * load_yaml("envs", name)["env_args"]["num_obstacles"]
    nearest = np.stack([np.linalg.norm(states[:, f[f"predator_{i}.others_rel"]][:, -2 * n_prey:].reshape(-1, n_prey, 2),
                                       axis=-1).min(1) for i in range(n)], axis=1)
    weights = run(name, states)[0].numpy()
    assert within_row_correlation(weights, nearest) < -0.3


def test_mpe_adversary_keeper_gets_credit_when_the_decoy_is_far():
    env, states = sample("mpe_adversary")
    f, n = schema(env.state_schema()), env.n_agents
    goal = np.stack([np.linalg.norm(states[:, f[f"agent_{i}.goal_rel"]], axis=-1) for i in range(n)], axis=1)
    landmarks = np.stack([np.linalg.norm(states[:, f[f"agent_{i}.landmarks_rel"]].reshape(-1, n, 2), axis=-1)
                          for i in range(n)], axis=1)  # [N, agent, landmark]
    decoy = np.where(np.abs(landmarks - goal[:, :, None]) < 1e-5, 1e3, landmarks).min(2)
    keeper = goal.argmin(1)
    other = 1 - keeper
    clear = (goal[np.arange(len(goal)), keeper] < 0.3) & (decoy[np.arange(len(goal)), other] > 1.0)
    assert clear.sum() >= 3
    weights = run("mpe_adversary", states)[0].numpy()
    assert (weights[clear].argmax(1) == keeper[clear]).all()


def test_pistonball_credit_peaks_at_the_ball():
    env, states = sample("pistonball")
    f, n = schema(env.state_schema()), env.n_agents
    ball = states[:, f["ball_x"]][:, 0]
    weights = run("pistonball", states)[0].numpy()
    centres = (np.arange(n) + 0.5) / n
    assert (np.abs(centres[weights.argmax(1)] - ball) * n <= 1.0).all()


@pytest.mark.parametrize("name", ["gfootball_3v1", "gfootball_counterattack_easy", "gfootball_pass_shoot"])
def test_football_ball_carrier_gets_most_credit(name):
    env, states = sample(name)
    f, n = schema(env.state_schema()), env.n_agents
    ours = states[:, f["agent_0.ball_owner"]][:, 1] > 0.5
    players = states[:, f["agent_0.left_team_positions"]].reshape(-1, 11, 2)
    ball = states[:, f["agent_0.ball_position"]][:, :2]
    active = np.stack([states[:, f[f"agent_{i}.active_player"]] for i in range(n)], axis=1)  # [N, n, 11]
    position = (active[..., None] * players[:, None]).sum(2)
    to_ball = np.where(active.sum(-1) > 0.5, np.linalg.norm(position - ball[:, None], axis=-1), 1e3)
    rows = ours & (np.sort(to_ball, 1)[:, 1] - to_ball.min(1) > 1e-4)
    weights = run(name, states)[0].numpy()
    assert rows.sum() > 0, "the seeded sample must hold states with our team on the ball"
    assert (weights[rows].argmax(1) == to_ball[rows].argmin(1)).all()
    no_player = active.sum(-1) < 0.5
    assert np.allclose(weights[no_player.all(1)], 1.0)  # nobody controls a player (edge state): equal credit
    one_off = states[no_player.any(1) == 0][:5].copy()  # agent 0 loses its player: little credit left for it
    one_off[:, f["agent_0.active_player"]] = 0.0
    assert (run(name, one_off)[0][:, 0] < 0.2).all()


@pytest.mark.parametrize("name", ["smax", "sc2", "sc2v2"])
def test_dead_agents_get_the_least_credit(name):
    env, states = sample(name)
    f, n = schema(env.state_schema()), env.n_agents
    health = np.stack([states[:, f[f"ally_{i}.health"]][:, 0] for i in range(n)], axis=1)
    weights = run(name, states)[0].numpy()
    dead, alive = health <= 0, health > 0
    mixed = dead.any(1) & alive.any(1)
    assert mixed.sum() >= 3
    for row in np.flatnonzero(mixed):
        assert weights[row][dead[row]].max() < weights[row][alive[row]].min()
    # an agent with an enemy in range and its weapon ready gets more credit than the same agent out of range
    if name == "smax":
        state = states[0].copy()  # a first state: everyone alive, enemies far away
        state[f["ally_0.weapon_cooldown"]] = -1.0
        for i in range(1, n):  # the other allies well out of range of ally 0's surroundings
            state[f[f"ally_{i}.position"]] = state[f["ally_0.position"]] - (10.0 + i, 0.0)
        near = state.copy()
        near[f["enemy_0.position"]] = state[f["ally_0.position"]] + (1.0, 0.0)
        w = run(name, np.stack([near, state]))[0]
        assert w[0, 0] > 1.1 and torch.allclose(w[1], torch.ones(n))


@pytest.mark.parametrize("name,agent,target", [("two_switch", 0, "switch1"), ("two_switch", 1, "switch2"),
                                               ("victim_rubble", 0, "victim1"), ("victim_rubble", 1, "rubble1")])
def test_grid_agent_about_to_complete_its_task_gets_more_credit(name, agent, target):
    env, states = sample(name)
    f = schema(env.state_schema())
    state = states[0].copy()  # a first state: nothing done yet
    other = 1 - agent
    goal = state[f[f"{target}_position"]]
    west = goal[0] > 4  # stand on the object's inner side (the outer one is a wall), facing it
    state[f[f"agent_{agent}_position"]] = goal + ((-1.0 if west else 1.0), 0.0)
    state[f[f"agent_{agent}_facing"]] = (0.0, 0.0, 0.0, 1.0) if west else (0.0, 0.0, 1.0, 0.0)  # up down left right
    state[f[f"agent_{other}_position"]] = (4.0, 5.0)
    state[f[f"agent_{other}_facing"]] = (1.0, 0.0, 0.0, 0.0)
    weights = run(name, state[None])[0][0]
    assert weights[agent] > 1.2 * weights[other]


@pytest.mark.parametrize("name", ["climbing", "penalty", "matrix_game"])
def test_matrix_credit_rewards_the_best_reply_to_the_teammate(name):
    env, _ = sample(name)
    f = schema(env.state_schema())
    payoff = np.asarray(env.payoff, dtype=float)
    assert np.array_equal(np.array(importlib.import_module(f"qllm.tfcafs.{file_for(name)}").PAYOFF), payoff)
    joint = [(a, b) for a in range(3) for b in range(3)]
    rows = np.zeros((1 + len(joint), env.get_state_size()), dtype=np.float32)  # row 0: the first step
    for k, (a, b) in enumerate(joint):
        rows[1 + k, f["agent_0_last_action"].start + a] = 1.0
        rows[1 + k, f["agent_1_last_action"].start + b] = 1.0
    weights = run(name, rows)[0].numpy()
    assert np.allclose(weights[0], 1.0)
    assert (weights[1:] >= 0.5 - 1e-6).all() and (weights[1:] <= 1.5 + 1e-6).all()
    for k, (a, b) in enumerate(joint):  # full credit exactly for a best reply to the teammate's last action
        assert (weights[1 + k, 0] > 1.499) == (payoff[a, b] >= payoff[:, b].max())
        assert (weights[1 + k, 1] > 1.499) == (payoff[a, b] >= payoff[a, :].max())


# ----------------------------------------------------------------------------------------------------------
# files and manifest


def test_every_env_config_has_a_labelled_reference():
    manifest = load_manifest()
    assert sorted(manifest) == sorted(CONFIGS) and "gymma" not in manifest
    for name in CONFIGS:
        path, entry = reference(name)
        with open(path, "rb") as f:
            data = f.read()
        assert data.decode().startswith(f"{HEADER}{file_for(name)}: ")
        assert entry["file"] == f"{file_for(name)}.py" and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert isinstance(entry["igm_gate"], bool)
    with pytest.raises(KeyError, match="no shipped reference TFCAF for env config 'gymma'.*lbf"):
        reference("gymma")


def test_a_config_without_a_reference_is_named_with_what_to_add():
    with pytest.raises(pytest.fail.Exception, match=r"env config 'target_game' has no reference TFCAF in "
                                                    r".*MANIFEST.json: write src/qllm/tfcafs/target_game.py .*SHARED"):
        manifest_entry("target_game")


def test_manifest_is_up_to_date():
    with open(manifest_path()) as f:
        shipped = json.load(f)
    assert build_manifest(shipped) == shipped, "run `cd src && python -m qllm.tfcafs.manifest`"
    with open(manifest_path()) as f:
        assert f.read() == dumps(shipped)


def test_starcraft_sizes_follow_the_smac_schema():
    for name in STARCRAFT:
        env = smac_env(name)
        check_schema(env.state_schema(), env.get_state_size())
        assert KNOWN_SIZES[name] == (env.get_state_size(), env.n_agents)
        assert (manifest_entry(name)["state_size"], manifest_entry(name)["n_agents"]) == KNOWN_SIZES[name]


def test_starcraft_references_refuse_other_layouts():
    with pytest.raises(ValueError, match="3m"):
        tfcaf_of("sc2")(torch.zeros(2, 120), 5)  # 2s3z's state: shields and unit types
    with pytest.raises(ValueError, match="10gen_protoss"):
        tfcaf_of("sc2v2")(torch.zeros(2, 48), 3)


def test_mpe_spread_reference_scales_with_n():
    for n in (3, 6, 15):
        env = make_env("mpe", scenario="spread", N=n, seed=0)
        env.reset()
        state = np.asarray(env.get_state(), dtype=np.float32)[None]
        weights, bias = tfcaf_of("mpe_spread")(torch.as_tensor(state), n)
        assert weights.shape == (1, n) and torch.isfinite(weights).all()
        env.close()
    assert file_for("mpe_spread_6") == "mpe_spread"


def test_references_pass_the_sandboxed_validator():
    from qllm.validate import ValidationContext, validate_source

    failures = []
    for name in CONFIGS:
        entry = manifest_entry(name)
        try:
            _, states = sample(name)
        except pytest.skip.Exception:
            continue
        path, _ = reference(name)
        with open(path) as f:
            source = f.read()
        report = validate_source(source, ValidationContext(n_agents=entry["n_agents"], state_size=entry["state_size"],
                                                           states=states, igm_gate=entry["igm_gate"]))
        if not report.ok:
            failures.append(f"{name}: {report.stage}: {report.errors}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", [c for c in CONFIGS if c not in STARCRAFT])
def test_reference_trains_through_the_sandboxed_worker(name):
    """Regression for issue 10: each shipped reference is trusted by the packaged manifest, runs in the worker,
    fills the batch with what the function computes, and one q_learner step trains on it."""
    from helpers import make_ctx

    cfg = load_yaml("envs", name)
    if cfg["env"] in OPTIONAL:
        require_extra(*OPTIONAL[cfg["env"]])
    ctx = make_ctx("qllm", name, batch_size=1, buffer_size=2, use_cuda=False, test_nepisode=1)
    try:
        provider = ctx.features[0]
        assert provider.spec.trust == "shipped reference"
        batch = ctx.annotate(ctx.runner.run(), t_env=0)
        T = batch.max_t_filled()
        w, b = run(name, batch["state"][0, :T].numpy())
        assert torch.allclose(batch["tfcaf_w"][0, :T], w, atol=1e-6)
        assert torch.allclose(batch["tfcaf_b"][0, :T], b, atol=1e-6)
        ctx.buffer.insert_episode_batch(batch)
        assert np.isfinite(ctx.learner.train(ctx.buffer.sample(1), t_env=T, episode_num=1)["loss"])
    finally:
        ctx.runner.close_env()
        for provider in ctx.features:
            provider.close()
