"""MisoDICE and INDD (learners/misodice_learner.py, learners/dice.py): the discriminator's log-ratio and the local
policies against the closed form on a one-state two-agent game, convexity and equivalence of the value
objectives, extreme advantages, the climbing mixture against BC, and every config end to end with exact resume."""
import glob
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch as th

from helpers import constant_climbing_episodes, make_ctx
from learners.common import log_policy
from learners.dice import absorbing_rows, dice_weights, exp_linear, interpolates, nu_objective, separation
from learners.misodice_learner import mixer_weights
from modules.mixers import REGISTRY as mixer_REGISTRY
from offline import DatasetWriter, OfflineDataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden_dim=32, critic_hidden_dim=32, learner_log_interval=10**9)

# one-state game: product-form distributions over 3 actions per agent; counts x 400 are integers, so the
# datasets hold exactly these frequencies
Q_U = (np.array([0.2, 0.3, 0.5]), np.array([0.5, 0.25, 0.25]))    # rho_U = q1 x q2
P_E = (np.array([0.5, 0.25, 0.25]), np.array([0.2, 0.3, 0.5]))    # rho_E = p1 x p2
N_ONE_STATE = 400


def one_state_episodes(marginals, n=N_ONE_STATE):
    """One-step episodes (zero observation and state, terminal) with joint actions in exact product frequencies."""
    joint = []
    for a0, a1 in itertools.product(range(3), repeat=2):
        joint += [(a0, a1)] * int(round(n * marginals[0][a0] * marginals[1][a1]))
    acts = np.array(joint)
    m = len(acts)
    actions = np.zeros((m, 2, 2, 1), np.int64)
    actions[:, 0, :, 0] = acts
    filled = np.ones((m, 2, 1), np.uint8)
    terminated = np.zeros((m, 2, 1), np.uint8)
    terminated[:, 0] = 1
    return {"obs": np.zeros((m, 2, 2, 6), np.float32), "state": np.zeros((m, 2, 6), np.float32),
            "reward": np.zeros((m, 2, 1), np.float32), "actions": actions,
            "avail_actions": np.ones((m, 2, 2, 3), np.uint8), "terminated": terminated, "filled": filled}


def write(path, parts, episode_limit):
    ctx = make_ctx("qmix", "climbing", seed=0, env_args={"episode_limit": episode_limit})
    with DatasetWriter(str(path), ctx.runner.get_env_info(), ctx.args.env, ctx.args.env_args) as w:
        for arrays, quality in parts:
            w.add_arrays(arrays, qualities=quality)
    return OfflineDataset.load(str(path))


@pytest.fixture(scope="module")
def one_state(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_state")
    union = write(tmp / "union.h5", [(one_state_episodes(Q_U), "random")], 1)
    expert = write(tmp / "expert.h5", [(one_state_episodes(P_E), "expert")], 1)
    return (union.episode_batch(np.arange(len(union))), expert.episode_batch(np.arange(len(expert))))


def train_one_state(alg, batches, alpha, seed=0, **overrides):
    th.manual_seed(seed)
    settings = dict(TINY, misodice_alpha=alpha, schedule="sequential", disc_steps=250, nu_steps=50,
                    critic_lr=0.01, lr=0.01, env_args={"episode_limit": 1}, weight_max=None)
    ctx = make_ctx(alg, "climbing", seed=seed, **{**settings, **overrides})
    ctx.learner.gamma = 0.0  # the closed form is for gamma = 0, which configs refuse (gamma in (0, 1])
    union, expert = batches
    for step in range(settings["disc_steps"] + settings["nu_steps"] + 200):
        ctx.learner.train({"data": union, "expert": expert}, step, step)
    return ctx.learner, union


def local_log_ratio(learner, union):
    """Agent-wise discriminator logits c_i(a_i) [2, 3] (independent) or the mixed logit per joint action [3, 3]."""
    with th.no_grad():
        nu_in = learner._nu_inputs(union)
        c = learner.disc.forward_seq(learner._disc_inputs(union, nu_in), None)[0][:, 0, :, 0]  # [M, 2]
        z = learner._log_odds(c[:, None], learner._states(union)[:, :1])[:, 0]                # [M, k]
    acts = union["actions"][:, 0, :, 0]
    return acts, z


def policy_marginals(learner, union):
    with th.no_grad():
        return learner.mac.unroll(union)[0, 0]  # [2, 3]: one state, so any row


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_one_state_game_log_ratio_and_local_policies_match_the_closed_form(alpha, one_state):
    learner, union = train_one_state("misodice", one_state, alpha)
    acts, z = local_log_ratio(learner, union)
    truth = np.log(P_E[0] / Q_U[0])[:, None] + np.log(P_E[1] / Q_U[1])[None, :]
    for a0, a1 in itertools.product(range(3), repeat=2):
        rows = (acts[:, 0] == a0) & (acts[:, 1] == a1)
        assert abs(z[rows, 0].mean().item() - truth[a0, a1]) < 0.1, (a0, a1, z[rows, 0].mean().item())
    # pi* ∝ mu (rho_E / rho_U)^(1 / (1 + alpha)) is a product here; its marginals are each factor normalised
    pi = policy_marginals(learner, union).numpy()
    for i in range(2):
        star = Q_U[i] * (P_E[i] / Q_U[i]) ** (1 / (1 + alpha))
        star /= star.sum()
        tv = 0.5 * np.abs(pi[i] - star).sum()
        assert tv < 0.05, (i, pi[i], star)
    # the diagnostic w_expert_mean: E_E[w] with w = (rho_E / rho_U)^(1 / (1 + alpha)) normalised over D_U
    beta = 1 / (1 + alpha)
    truth_w = np.prod([(P_E[i] * (P_E[i] / Q_U[i]) ** beta).sum() / (Q_U[i] * (P_E[i] / Q_U[i]) ** beta).sum()
                       for i in range(2)])
    measured = learner.expert_weight_mean(union, one_state[1]).item()
    assert abs(measured - truth_w) < 0.1 * truth_w, (measured, truth_w)
    # the logged disc_auc: the same as the exact log-ratio's AUC of these expert rows against these union rows
    expert = one_state[1]
    true_z = [th.tensor(truth[b["actions"][:, 0, 0, 0].numpy(), b["actions"][:, 0, 1, 0].numpy()]) for b in
              (expert, union)]
    logged = learner.disc_separation(union, expert)
    assert abs(logged["disc_auc"].item() - separation(*true_z)[1].item()) < 0.02


def test_separation_counts_pairs_and_ties():
    acc, auc = separation(th.tensor([2.0, 0.0, -1.0]), th.tensor([0.0, -1.0, -3.0, 1.0]))
    # expert 2 beats all 4; 0 beats 2, ties 1; -1 beats 1, ties 1: (4 + 2.5 + 1.5) / 12
    assert auc.item() == pytest.approx(8 / 12) and acc.item() == pytest.approx(0.5 * (1 / 3 + 2 / 4))
    assert all(th.isnan(x) for x in separation(th.tensor([]), th.tensor([1.0])))  # nothing to compare: not 0


def test_indd_learns_each_agents_own_log_ratio(one_state):
    # without the gradient penalty, which biases one network's logits (errors 0.06-0.08 with it; MisoDICE's mixer
    # weights absorb the scale: 0.02)
    learner, union = train_one_state("indd", one_state, 0.0, disc_grad_penalty=0.0)
    assert learner.disc_mixer is None and learner.nu_mixer is None
    acts, z = local_log_ratio(learner, union)
    assert z.shape[-1] == 2  # one logit per agent, no mixing
    for i in range(2):
        truth = np.log(P_E[i] / Q_U[i])
        for a in range(3):
            assert abs(z[acts[:, i] == a, i].mean().item() - truth[a]) < 0.1, (i, a)
    pi = policy_marginals(learner, union).numpy()
    assert all(0.5 * np.abs(pi[i] - P_E[i]).sum() < 0.05 for i in range(2)), pi


# a sharp expert: its favourite action is 8x likelier than the union's, the others 4.5x less (log-ratio spread 3.6)
Q_SHARP = (np.array([0.1, 0.45, 0.45]),) * 2
P_SHARP = (np.array([0.8, 0.1, 0.1]),) * 2


@pytest.fixture(scope="module")
def sharp_state(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharp")
    union = write(tmp / "union.h5", [(one_state_episodes(Q_SHARP), "random")], 1)
    expert = write(tmp / "expert.h5", [(one_state_episodes(P_SHARP), "expert")], 1)
    return (union.episode_batch(np.arange(len(union))), expert.episode_batch(np.arange(len(expert))))


def test_blended_action_penalty_caps_the_log_ratio_between_actions_and_the_observation_only_one_does_not(
        sharp_state):
    # DemoDICE's penalty (0.1) on blended one-hot actions holds |c(a) - c(a')| near |a - a'| = sqrt 2, below the
    # 3.6 this expert needs (measured: error 0.97); disc_gp_inputs=obs penalises the observation part only (0.001)
    errors = {}
    for mode in ("all", "obs"):
        learner, union = train_one_state("indd", sharp_state, 0.0, disc_gp_inputs=mode)
        acts, z = local_log_ratio(learner, union)
        errors[mode] = max(abs(z[acts[:, i] == a, i].mean().item() - np.log(P_SHARP[i][a] / Q_SHARP[i][a]))
                           for i in range(2) for a in range(3))
    assert errors["obs"] < 0.1 < 0.3 < errors["all"], errors


def test_penalty_interpolates_blend_observations_and_keep_one_endpoints_action():
    th.manual_seed(0)
    x_e = th.cat([th.zeros(50, 4), th.nn.functional.one_hot(th.zeros(50, dtype=th.long), 3).float()], -1)
    x_u = th.cat([th.ones(50, 4), th.nn.functional.one_hot(th.full((50,), 2), 3).float()], -1)
    rows = interpolates(x_e, x_u, 400, discrete=3)
    first, second = rows[:400], rows[400:]
    assert th.equal(rows[:, 4:].sum(-1), th.ones(800)) and set(rows[:, 4:].unique().tolist()) == {0.0, 1.0}
    assert th.all(second[:, :4] == 1) and th.all(second[:, 6] == 1)  # union-union: both endpoints alike
    # expert-union: the observation is u * 0 + (1 - u) * 1, the action the expert's with probability u
    u = 1 - first[:, 0]
    assert 0.4 < u.mean().item() < 0.6 and 0 < u.min() and u.max() < 1
    took_expert = first[:, 4] == 1
    assert u[took_expert].mean() > 0.6 > 0.4 > u[~took_expert].mean()
    blended = interpolates(x_e, x_u, 400)  # DemoDICE's: actions blended like the rest
    assert (blended[:400, 4:] % 1 != 0).any()


# ----- the value objective -----
def random_problem(seed, n_steps=64, n_agents=2, terminals=True):
    g = th.Generator().manual_seed(seed)
    r = th.randn(4, n_steps, 1, generator=g)
    nu = th.randn(4, n_steps + 1, n_agents, generator=g)
    term = (th.rand(4, n_steps, 1, generator=g) < 0.1).float() if terminals else th.zeros(4, n_steps, 1)
    mask = th.ones(4, n_steps, 1)
    mask[0, n_steps // 2:] = 0  # a shorter episode: padding
    return r, nu, term, mask


def objective(nu_local, phi, r, term, mask, form, gamma=0.9, alpha=0.05):
    """The nu loss with mixer `linear` (weights phi[:-1] >= 0, bias phi[-1])."""
    nu_tot = (phi[:-1] * nu_local).sum(-1, keepdim=True) + phi[-1]
    adv = r + gamma * (1 - term) * nu_tot[:, 1:] - nu_tot[:, :-1]
    return nu_objective(adv, nu_tot[:, 0], mask, alpha, gamma, form, exp_clip=10.0).sum()


@pytest.mark.parametrize("form", ["exp", "logsumexp"])
def test_nu_objective_with_the_linear_mixer_is_convex_along_random_segments(form):
    """Prop. 5.1: convex in the local values (mixer fixed) and in the mixer's weights (values fixed)."""
    mixer = mixer_REGISTRY["linear"](type("A", (), {"n_agents": 2})())
    w, b = mixer_weights(mixer, th.zeros(1, 3), 2)
    assert th.equal(w, th.ones(1, 2)) and th.equal(b, th.zeros(1, 1))  # starts as VDN
    for seed in range(5):
        r, nu, term, mask = random_problem(seed)
        g = th.Generator().manual_seed(100 + seed)
        nu_a, nu_b = nu, th.randn(nu.shape, generator=g)
        phi_a, phi_b = th.rand(3, generator=g) * 2, th.rand(3, generator=g) * 2
        for lam in (0.25, 0.5, 0.75):
            f = [objective(x, phi_a, r, term, mask, form) for x in (nu_a, nu_b, lam * nu_a + (1 - lam) * nu_b)]
            assert f[2] <= lam * f[0] + (1 - lam) * f[1] + 1e-5
            f = [objective(nu_a, p, r, term, mask, form) for p in (phi_a, phi_b, lam * phi_a + (1 - lam) * phi_b)]
            assert f[2] <= lam * f[0] + (1 - lam) * f[1] + 1e-5


def test_exp_and_logsumexp_forms_give_the_same_normalised_weights():
    """Minimised over free values nu(s) of 6 states (time-limit ends only: the forms then differ by a shift of nu),
    both give the same weights once normalised."""
    g = th.Generator().manual_seed(0)
    states = th.randint(0, 6, (8, 17), generator=g)
    r = th.randn(8, 16, 1, generator=g)
    mask = th.ones(8, 16, 1, dtype=th.float64)
    r = r.double()
    weights = []
    for form in ("exp", "logsumexp"):
        table = th.zeros(6, 1, dtype=th.float64, requires_grad=True)
        opt = th.optim.LBFGS([table], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                             line_search_fn="strong_wolfe")

        def closure(form=form, table=table, opt=opt):
            opt.zero_grad()
            nu = table[states]
            loss = nu_objective(r + 0.9 * nu[:, 1:] - nu[:, :-1], nu[:, 0], mask, 0.05, 0.9, form, 10.0).sum()
            loss.backward()
            return loss

        opt.step(closure)
        nu = table[states].detach()
        weights.append(dice_weights(r + 0.9 * nu[:, 1:] - nu[:, :-1], mask, 0.05, True, 10.0, None))
    assert th.allclose(weights[0], weights[1], rtol=1e-5, atol=1e-6), (weights[0] - weights[1]).abs().max()
    assert weights[0].std() > 0.1  # not trivially uniform


@pytest.mark.parametrize("form", ["exp", "logsumexp"])
@pytest.mark.parametrize("normalise", [True, False])
def test_extreme_advantages_give_finite_losses_weights_and_gradients(form, normalise):
    adv = th.tensor([[[1e4], [-1e4], [0.0], [5e3]]], requires_grad=True)
    mask = th.ones(1, 4, 1)
    loss = nu_objective(adv, th.zeros(1, 1), mask, 0.05, 0.99, form, 10.0).sum()
    loss.backward()
    assert th.isfinite(loss) and th.isfinite(adv.grad).all()
    w = dice_weights(adv.detach(), mask, 0.05, normalise, 10.0, 20.0)
    assert th.isfinite(w).all() and (w >= 0).all() and w.max() <= 20.0
    assert exp_linear(th.tensor(1e4), 10.0).isfinite()


def test_episode_pooling_gives_each_step_its_episode_mean_weight():
    """weight_pooling=episode: a transition's weight is its episode's mean over real steps (padding stays 0, the total
    is unchanged), per agent column; then the clip. transition (default) keeps each step's own weight."""
    adv = th.log(th.tensor([[[1.0, 2.0], [3.0, 2.0], [9.0, 9.0]], [[4.0, 1.0], [2.0, 1.0], [6.0, 1.0]]])) + 1
    mask = th.tensor([[[1.0], [1.0], [0.0]], [[1.0], [1.0], [1.0]]])  # episode 0's last step is padding
    own = dice_weights(adv, mask, 0.0, False, 10.0, None)
    assert th.allclose(own, th.tensor([[[1.0, 2.0], [3.0, 2.0], [0.0, 0.0]], [[4.0, 1.0], [2.0, 1.0], [6.0, 1.0]]]))
    pooled = dice_weights(adv, mask, 0.0, False, 10.0, None, "episode")
    assert th.allclose(pooled, th.tensor([[[2.0, 2.0], [2.0, 2.0], [0.0, 0.0]], [[4.0, 1.0], [4.0, 1.0], [4.0, 1.0]]]))
    assert th.allclose(pooled.sum((0, 1)), own.sum((0, 1)))
    assert dice_weights(adv, mask, 0.0, False, 10.0, 3.0, "episode").max() == 3.0
    learner = countdown_learner(weight_pooling="episode")
    assert learner.args.weight_pooling == "episode"
    with pytest.raises(ValueError, match="'weight_pooling' must be one of transition, episode; got 'step'"):
        countdown_learner(weight_pooling="step")


# ----- the climbing mixture -----
@pytest.fixture(scope="module")
def climbing_mixture(tmp_path_factory):
    """A minority of expert episodes at the optimum (0, 0), a majority at the safe (2, 2): BC plays (2, 2)."""
    path = tmp_path_factory.mktemp("climbing") / "mixture.h5"
    data = write(path, [(constant_climbing_episodes(10, 0, 0, limit=10), "expert"),
                        (constant_climbing_episodes(20, 2, 2, limit=10), "poor")], 10)
    data.path = str(path)
    return data, data.subset(np.flatnonzero(data.quality_code_array[:, 0] == data.quality_codes["expert"]))


def greedy_joint_actions(alg, climbing_mixture, seed, steps, **overrides):
    data, expert = climbing_mixture
    th.manual_seed(seed)
    tiny = TINY if alg != "bc" else {"hidden_dim": 32, "learner_log_interval": 10**9}
    ctx = make_ctx(alg, "climbing", seed=seed, env_args={"episode_limit": 10}, **{**tiny, **overrides})
    ctx.learner.fit_data(data)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        batches = {"data": data.sample(8, rng=rng), "expert": expert.sample(8, rng=rng)}
        if "init" in ctx.learner.batches:  # DICE's s0 batch: initial states of other D_U episodes
            batches["init"] = data.sample(ctx.args.s0_batch_size, rng=rng)[:, :1]
        ctx.learner.train({k: batches[k] for k in ctx.learner.batches}, step, step)
    return ctx.runner.run(test_mode=True)["actions"][0, :10, :, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_misodice_plays_the_optimum_held_by_a_data_minority(seed, climbing_mixture):
    actions = greedy_joint_actions("misodice", climbing_mixture, seed, 240, disc_steps=80, nu_steps=80,
                                   lr=0.003, critic_lr=0.003)
    assert (actions == 0).all(), actions


def test_bc_plays_the_majority_of_the_same_mixture(climbing_mixture):
    actions = greedy_joint_actions("bc", climbing_mixture, 0, 80, lr=0.003)
    assert (actions == 2).all(), actions


# ----- end to end -----
E2E = ["offline_test_interval=100", "offline_log_interval=2", "offline_save_interval=4", "batch_size=4",
       "test_nepisode=1", "env_args.episode_limit=10", "hidden_dim=16", "critic_hidden_dim=16", "mixing_embed_dim=8",
       "disc_steps=3", "nu_steps=3", "gp_samples=8"]


def main_processes(runs):
    """src/main.py runs [(results folder, alg, updates)] as concurrent subprocesses; their models folders (None for
    a resumed run, which continues in the folder it resumes)."""
    procs = [subprocess.Popen([sys.executable, "src/main.py", f"--config={alg}", "--env-config=climbing", "with",
                               f"local_results_path={tmp}", "seed=3", *E2E, *updates], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for tmp, alg, updates in runs]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]
    return [next(iter(glob.glob(os.path.join(tmp, "models", "*"))), None) for tmp, _, _ in runs]


def checkpoint_files(folder):
    return {os.path.basename(f): th.load(f, weights_only=False) for f in glob.glob(os.path.join(folder, "*.th"))
            if os.path.basename(f) != "run_state.th"}


def assert_same(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif th.is_tensor(a):
        assert th.equal(a, b), where
    else:
        assert a == b, where


RESUMED = {"misodice": ["nu_target=True", "mixer=lmix"], "indd": ["schedule=joint"]}


def test_every_config_runs_end_to_end_and_resumes_exactly(tmp_path, climbing_mixture):
    """Through src/main.py (subprocesses, run together): misodice_vdn for 8 steps; misodice (sequential, lmix,
    target nu) and indd (joint) for 8 steps straight vs 4 + resumed 4. misodice's checkpoint at 4 falls in the
    value stage (disc 3, nu 3, then the policy), so the resumed run must pick the schedule up where it was; every
    learner file at 8 is identical, the D_U statistics of the normaliser included."""
    data = f"offline_dataset={climbing_mixture[0].path}"
    runs = [(tmp_path / "vdn", "misodice_vdn", ["offline_steps=8", data])]
    for alg, extra in RESUMED.items():
        runs += [(tmp_path / f"{alg}_full", alg, ["offline_steps=8", data, *extra]),
                 (tmp_path / f"{alg}_half", alg, ["offline_steps=4", data, *extra])]
    models = dict(zip([str(r[0]) for r in runs], main_processes(runs)))
    main_processes([(tmp_path / f"{alg}_resumed", alg, ["offline_steps=8", data,
                                                         f"checkpoint_path={models[str(tmp_path / f'{alg}_half')]}",
                                                         *extra]) for alg, extra in RESUMED.items()])
    for alg in ("vdn", "indd_full"):  # scripts/dice_weights.py rebuilds the learner from the run's folder
        out = subprocess.run([sys.executable, "scripts/dice_weights.py", models[str(tmp_path / alg)], "--json",
                              str(tmp_path / f"{alg}.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.load(open(tmp_path / f"{alg}.json"))
        assert report["checkpoint"].endswith(os.path.join(os.path.basename(models[str(tmp_path / alg)]), "8"))
        assert report["episodes"] == len(climbing_mixture[0]) and 0 < report["expert_episodes"] < report["episodes"]
        assert len(report["w_by_step_expert"]) == len(report["r_by_step_rest"]) == 10
        assert 0 < report["expert_weight_share"] < 1
        assert "| t | w all | w D_E | w rest | r all | r D_E | r rest |" in out.stdout
        mix = report["training_mix"]  # the climbing mixture has ground-truth qualities: every view is reported
        # D_E = quality:expert: its ground-truth share is 1, and the weights' share on it is expert_weight_share
        assert set(mix) == {"weights", "D_U", "D_E"} and mix["D_E"]["true_expert_share"] == 1
        assert 0 < mix["D_U"]["true_expert_share"] < 1
        assert mix["weights"]["true_expert_share"] == pytest.approx(report["expert_weight_share"], rel=1e-5)
        assert "D_E alone (BC(β=1))" in out.stdout
    # a renamed run saved before time_limit_end existed: its learner's config fills the key; one saved before the
    # absorbing state trained without it, which this checkpoint contradicts: a clear error, no traceback
    old = tmp_path / "old_run"
    shutil.copytree(models[str(tmp_path / "indd_full")], old)
    config = json.load(open(old / "config.json"))
    config.pop("time_limit_end")
    json.dump({**config, "name": "indd_renamed"}, open(old / "config.json", "w"))
    script = [sys.executable, "scripts/dice_weights.py", str(old / "8")]
    out = subprocess.run(script, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "of them in D_E" in out.stdout, out.stderr[-3000:]
    config.pop("absorbing")
    json.dump(config, open(old / "config.json", "w"))
    out = subprocess.run(script, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "trained with absorbing=True" in out.stderr and "Traceback" not in out.stderr
    vdn = checkpoint_files(os.path.join(models[str(tmp_path / "vdn")], "8"))
    assert vdn["learner.th"]["train_steps"] == 8 and vdn["critics.th"]["nu_mixer"] == {}
    for alg in RESUMED:
        a = checkpoint_files(os.path.join(models[str(tmp_path / f"{alg}_full")], "8"))
        b = checkpoint_files(os.path.join(models[str(tmp_path / f"{alg}_half")], "8"))
        assert {"agent.th", "critics.th", "opt.th", "learner.th"} <= set(a)
        assert a["learner.th"]["train_steps"] == 8
        assert_same(a, b, alg)
        norm = a["critics.th"]["normaliser"]
        assert not th.equal(norm["obs_std"], th.ones_like(norm["obs_std"]))  # fitted on D_U, saved


def test_training_mix_is_the_weighted_share_and_return():
    """scripts/dice_weights.py's training_mix by hand: episode 0 (expert, return 2, 2 real steps), 1 (poor, return 0,
    1 real step), 2 (poor, return 1, 2 real steps, one weighted 3)."""
    from dice_weights import report, training_mix
    mask = np.array([[1, 1], [1, 0], [1, 1]], np.float32)
    w = np.array([[1, 1], [5, 5], [3, 1]], np.float32)  # episode 1's padded step (weight 5) must not count
    returns, expert = np.array([2.0, 0.0, 1.0]), np.array([True, False, False])
    every = np.ones(3, bool)
    assert training_mix(w, mask, every, returns, expert) == pytest.approx(
        {"true_expert_share": 2 / 11, "episode_return": (2 * 2 + 0 * 5 + 1 * 4) / 11})
    assert training_mix(np.ones_like(w), mask, every, returns, None) == {"true_expert_share": None,
                                                                          "episode_return": pytest.approx(6 / 5)}
    terms = {"w": w[..., None], "r": np.zeros((3, 2, 1), np.float32), "mask": mask[..., None]}  # as dataset_weights
    out = report(terms, np.array([True, True, False]), returns, expert)["training_mix"]
    assert out["D_E"] == pytest.approx({"true_expert_share": 2 / 3, "episode_return": 4 / 3})
    assert out["D_U"]["true_expert_share"] == pytest.approx(2 / 5)
    # INDD's weights have one column per agent: an agent's step counts by its own weight, the mix by their mean
    per_agent = {"w": np.stack([w, np.array([[3, 3], [1, 1], [1, 1]], np.float32)], -1),
                 "r": np.zeros((3, 2, 2), np.float32), "mask": np.stack([mask, mask], -1)}
    weights = report(per_agent, np.zeros(3, bool), returns, expert)["training_mix"]["weights"]
    assert weights["true_expert_share"] == pytest.approx((2 + 6) / 2 / ((11 + 9) / 2))  # agent 1: 6 + 1 + 2


# ----- terminals, padding, non-finite values -----
@pytest.fixture(scope="module")
def countdown(tmp_path_factory):
    """Countdown episodes (tests/helpers.py): 2 end with a true terminal after 3 steps, 2 by the time limit at 6."""
    path = str(tmp_path_factory.mktemp("countdown") / "countdown.h5")
    ctxs = [make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=0, env="countdown",
                     env_args={"episode_limit": 6, "terminal_at": terminal}) for terminal in (3, None)]
    info, args = ctxs[0].runner.get_env_info(), ctxs[0].args
    with DatasetWriter(path, info, args.env, args.env_args) as w:
        for ctx in ctxs * 2:
            w.add(ctx.runner.run(test_mode=False), qualities="expert")
    ds = OfflineDataset.load(path)
    return ds.episode_batch(np.arange(len(ds)))


@pytest.fixture(scope="module")
def countdown_mixture_file(tmp_path_factory):
    """4 'expert' countdown episodes that end by a terminal after 3 steps, 4 'poor' ones cut by the time limit at 6
    (the same observations up to step 3): LBF's pattern, where the expert finishes early."""
    path = str(tmp_path_factory.mktemp("countdown_mixture") / "mixture.h5")
    th.manual_seed(0)  # the random actions: the same data in every process
    np.random.seed(0)
    ctxs = [make_ctx("qmix", "climbing", epsilon_start=1.0, epsilon_finish=1.0, seed=0, env="countdown",
                     env_args={"episode_limit": 6, "terminal_at": terminal}) for terminal in (3, None)]
    info, args = ctxs[0].runner.get_env_info(), ctxs[0].args
    with DatasetWriter(path, info, args.env, args.env_args) as w:
        for ctx, quality in ((ctxs[0], "expert"), (ctxs[1], "poor")) * 4:
            w.add(ctx.runner.run(test_mode=False), qualities=quality)
    return path


@pytest.fixture(scope="module")
def countdown_mixture(countdown_mixture_file):
    """(union, expert) batches of the countdown mixture."""
    ds = OfflineDataset.load(countdown_mixture_file)
    expert = np.flatnonzero(ds.quality_code_array[:, 0] == ds.quality_codes["expert"])
    return ds.episode_batch(np.arange(len(ds))), ds.episode_batch(expert)


@pytest.mark.parametrize("alg", ["misodice", "indd"])
def test_dataset_weights_are_the_weights_of_one_batch_of_the_whole_dataset(alg, countdown_mixture_file):
    """scripts/dice_weights.py's numbers: the weights of D_U read in chunks are the weights the policy loss uses on
    one batch of all of it, and D_E's mean among them is expert_weight_mean's."""
    ds = OfflineDataset.load(countdown_mixture_file)
    expert_rows = np.flatnonzero(ds.quality_code_array[:, 0] == ds.quality_codes["expert"])
    union, expert = ds.episode_batch(np.arange(len(ds))), ds.episode_batch(expert_rows)
    learner = countdown_learner(alg, weight_max=3.0)
    for step in range(30):
        learner.train({"data": union, "expert": expert}, step, step)
    out = learner.dataset_weights(ds, chunk=3)
    w, mask = out["w"], out["mask"]
    assert w.shape == mask.shape == out["r"].shape == (8, 6, 1 if alg == "misodice" else 2)
    # the policy loss of a batch of the whole dataset is -mean(w log pi) with these w (its normalisation is D_U's)
    actor_loss = learner.losses(union, expert, "actor")[0]["actor_loss"].item()
    actions = union["actions"][:, :-1]
    log_pi = log_policy(learner.mac, union)[:, :-1].gather(3, actions).squeeze(3).detach().numpy()  # [B, T-1, n]
    mask_n = np.broadcast_to(mask[..., :1], log_pi.shape)
    assert -(w * log_pi * mask_n).sum() / mask_n.sum() == pytest.approx(actor_loss, rel=1e-5)
    _, _, r = learner._batch_advantages(union)
    np.testing.assert_allclose(out["r"][mask > 0], r.expand_as(th.as_tensor(w)).numpy()[mask > 0], rtol=1e-5)
    assert w.max() <= 3.0 and np.ptp(w[mask > 0]) > 0.01  # trained: not all alike
    expert_mean = (w * mask)[expert_rows].sum((0, 1)) / mask[expert_rows].sum((0, 1))
    np.testing.assert_allclose(expert_mean, learner.expert_weight_mean(union, expert).numpy(), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_absorbing_state_keeps_the_weights_on_experts_that_finish_early(seed, countdown_mixture):
    """The absorbing state fills each expert episode's last 3 steps: its logit is the closed-form log-ratio of
    absorbing rows (12 of 24 expert rows, 12 of 48 union rows: log 2), and the weights favour D_E's transitions."""
    union, expert = countdown_mixture
    th.manual_seed(seed)
    learner = make_ctx("misodice", "climbing", seed=seed, env="countdown", env_args={"episode_limit": 6},
                       **{**TINY, "schedule": "sequential", "disc_steps": 300, "nu_steps": 300, "critic_lr": 0.01,
                          "lr": 0.01, "gamma": 0.9}).learner
    for step in range(700):
        learner.train({"data": union, "expert": expert}, step, step)
    assert abs(learner.absorbing.logit.item() - np.log(2.0)) < 0.05
    assert learner.expert_weight_mean(union, expert).item() > 2.0


@pytest.mark.parametrize("alg", ["misodice", "indd"])
def test_absorbing_rows_fill_the_time_limit_of_terminated_episodes_only(alg, countdown):
    learner = countdown_learner(alg)
    for batch in (countdown, with_padding(countdown, 3)):  # padding adds no rows
        mask, _ = learner._masks(batch)
        rows = absorbing_rows(learner._ends(batch), mask, 6)
        assert rows.shape == (4, 1, mask.shape[-1])
        ended = batch["terminated"][:, :-1, 0].amax(1) > 0  # 2 end by a terminal after 3 steps, 2 by the limit
        assert (rows[ended] == 3).all() and (rows[~ended] == 0).all()
    mask, _ = learner._masks(countdown)
    assert (absorbing_rows(learner._ends(countdown), mask, 3)[ended] == 1).all()  # a terminal at the limit: one row
    # time_limit_end=terminal: the episodes cut by the 6-step limit end in the absorbing state too, with one row
    limit_ends = countdown_learner(alg, time_limit_end="terminal")
    rows = absorbing_rows(limit_ends._ends(countdown), mask, 6)
    assert (rows[ended] == 3).all() and (rows[~ended] == 1).all()


def test_the_nu_objective_with_the_absorbing_state_ignores_a_shift_of_every_value(countdown):
    """(1 - gamma) E_s0[nu] + (1 + alpha) log E exp(A / (1 + alpha)) is invariant to nu -> nu + c when nu_abs
    shifts too: every A, the absorbing self-loop's included, drops by (1 - gamma) c. A wrong sign or a missing
    bootstrap in the absorbing terms breaks it."""
    learner = countdown_learner()
    g = th.Generator().manual_seed(0)
    nu, r = th.randn(4, 7, 1, generator=g), th.randn(4, 6, 1, generator=g)
    mask, _ = learner._masks(countdown)

    def objective(shift):
        with th.no_grad():
            learner.absorbing.value_raw.fill_((1.5 + shift) / learner.absorbing.value_scale)
        v = nu + shift
        adv = learner.advantage(countdown, r, v[:, :-1], v[:, 1:])
        adv_x, mask_x = learner._with_absorbing(adv, mask, learner.absorbing_advantage(), countdown)
        assert mask_x.sum() == mask.sum() + 6  # two terminated episodes, 3 absorbing steps each
        return nu_objective(adv_x, v[:, 0], mask_x, learner.alpha, learner.gamma, "logsumexp", 10.0).item()

    assert objective(0.0) == pytest.approx(objective(7.0), abs=1e-4)
    assert objective(0.0) == pytest.approx(objective(-3.0), abs=1e-4)


def test_a_checkpoint_resumes_only_with_the_absorbing_state_it_was_trained_with(countdown):
    from utils.checkpoint import CheckpointError
    on, off = countdown_learner(), countdown_learner(absorbing=False)
    older = {"disc": {}, "nu": {}}  # critics saved before the absorbing state existed: it was off
    assert off.upgrade_state("critics", dict(older), "ckpt")["absorbing"] is None
    with pytest.raises(CheckpointError, match="absorbing=False"):
        on.upgrade_state("critics", dict(older), "ckpt")
    with pytest.raises(CheckpointError, match="absorbing=True"):
        off.upgrade_state("critics", {**older, "absorbing": on.absorbing.state_dict()}, "ckpt")


def countdown_learner(alg="misodice", **overrides):
    th.manual_seed(0)
    return make_ctx(alg, "climbing", seed=0, env="countdown", env_args={"episode_limit": 6},
                    **{**TINY, "schedule": "joint", **overrides}).learner


def test_terminals_stop_bootstrapping_and_time_limit_ends_bootstrap(countdown):
    learner = countdown_learner()
    nu_s, nu_next, r = th.full((4, 6, 1), 100.0), th.full((4, 6, 1), 100.0), th.zeros(4, 6, 1)
    adv = learner.advantage(countdown, r, nu_s, nu_next)[..., 0]
    terminal, truncated = countdown["terminated"][:, :-1, 0] > 0, countdown["truncated"][:, :-1, 0] > 0
    assert terminal.sum() == 2 and truncated.sum() == 2
    assert th.allclose(adv[truncated], th.full((2,), 100.0 * (learner.gamma - 1)))
    with th.no_grad():  # after a terminal: the absorbing state's value
        learner.absorbing.value_raw.fill_(7.0 / learner.absorbing.value_scale)
    adv = learner.advantage(countdown, r, nu_s, nu_next)[..., 0]
    assert th.allclose(adv[terminal], th.full((2,), 7.0 * learner.gamma - 100.0), atol=1e-4)
    no_absorbing = countdown_learner(absorbing=False)  # the paper's form: no bootstrap at all
    adv = no_absorbing.advantage(countdown, r, nu_s, nu_next)[..., 0]
    assert th.allclose(adv[terminal], th.full((2,), -100.0))
    assert th.allclose(adv[truncated], th.full((2,), 100.0 * (learner.gamma - 1)))
    # time_limit_end=terminal: a time-limit end is a terminal as well (absorbing value, or nothing with it off)
    for absorbing, after in ((True, 7.0), (False, 0.0)):
        ends = countdown_learner(absorbing=absorbing, time_limit_end="terminal")
        if absorbing:
            with th.no_grad():
                ends.absorbing.value_raw.fill_(7.0 / ends.absorbing.value_scale)
        adv = ends.advantage(countdown, r, nu_s, nu_next)[..., 0]
        assert th.allclose(adv[terminal | truncated], th.full((4,), after * ends.gamma - 100.0), atol=1e-4)
    with pytest.raises(ValueError, match="'time_limit_end' must be one of bootstrap, terminal; got 'truncate'"):
        countdown_learner(time_limit_end="truncate")


def with_padding(batch, extra):
    from components.episode_buffer import EpisodeBatch
    scheme = {k: v for k, v in batch.scheme.items() if k != "filled"}
    longer = EpisodeBatch(scheme, batch.groups, batch.batch_size, batch.max_seq_length + extra)
    for key, value in batch.data.transition_data.items():
        longer.data.transition_data[key][:, : batch.max_seq_length] = value
    return longer


@pytest.mark.parametrize("alg", ["misodice", "indd"])
def test_padding_changes_no_loss(alg, countdown):
    learner = countdown_learner(alg)
    th.manual_seed(5)
    short, _ = learner.losses(countdown, countdown, "joint")
    th.manual_seed(5)  # the same gradient-penalty interpolates
    padded, _ = learner.losses(with_padding(countdown, 3), with_padding(countdown, 3), "joint")
    for k in short:
        assert padded[k].item() == pytest.approx(short[k].item(), rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("alg, overrides", [("misodice", {}), ("indd", {}),
                                             ("misodice", {"nu_target": True, "disc_mix": "probs"})])
def test_feed_forward_critics_on_the_real_rows_only_give_the_full_unrolls_losses_and_gradients(alg, overrides,
                                                                                             countdown_mixture):
    """MLP critics see only the real transitions (and their next states); the losses, gradients and the weights'
    statistics equal those of running them over every padded step, the path a recurrent critic takes."""
    union, expert = countdown_mixture
    results = []
    for full in (False, True):
        learner = countdown_learner(alg, **overrides)
        assert (learner.target_nu is not None) == overrides.get("nu_target", False)
        assert not learner.disc.recurrent and not learner.nu.recurrent  # the config's critic_agent: mlp
        if full:
            for net in (learner.disc, learner.nu, learner.target_nu):
                if net is not None:
                    net.recurrent = True
        padded_u, padded_e = with_padding(union, 4), with_padding(expert, 7)
        seen, forward = [], learner.disc.forward_seq  # rows per call (forward_seq bypasses module hooks)
        learner.disc.forward_seq = lambda x, h, seen=seen, forward=forward: (seen.append(x.shape[:-1].numel()),
                                                                             forward(x, h))[1]
        th.manual_seed(3)
        losses, _ = learner.losses(padded_u, padded_e, "joint")
        learner.disc.forward_seq = forward
        real = int(learner._masks(padded_u)[1].sum() + learner._masks(padded_e)[1].sum())
        assert (sum(seen[:2]) == real) != full  # the union and expert rows: packed, or every padded step
        sum(losses.values()).backward()
        grads = [p.grad.clone() for p in [*learner.disc.parameters(), *learner.nu.parameters()]]
        results.append(({k: v.item() for k, v in losses.items()}, grads,
                        learner.expert_weight_mean(padded_u, padded_e).numpy()))
    (packed, g_packed, w_packed), (full, g_full, w_full) = results
    assert packed == pytest.approx(full, rel=1e-5, abs=1e-6)
    assert all(th.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_packed, g_full))
    np.testing.assert_allclose(w_packed, w_full, rtol=1e-5)


def test_a_non_finite_loss_stops_naming_the_step(countdown):
    from learners.common import NonFiniteError
    learner = countdown_learner()
    bad = with_padding(countdown, 0)
    bad.data.transition_data["obs"][0, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="gradient step 7|t_env 7"):
        learner.train({"data": bad, "expert": countdown}, 7, 7)


def all_weights(learner):
    nets = {"actor": learner.mac.agent, "disc": learner.disc, "nu": learner.nu}
    return {f"{name}.{p}": v.detach().cpu().clone() for name, net in nets.items() for p, v in net.state_dict().items()}


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("alg", ["misodice", "misodice_vdn", "indd"])
def test_cuda_training_matches_cpu_and_checkpoints_cross_devices(alg, countdown_mixture, tmp_path):
    union, expert = countdown_mixture
    learners, runs = [], []
    for use_cuda in (False, True):  # same seed: same initial weights. The penalties' interpolates are drawn from the
        # device's own generator, so they are off here and checked for finiteness below
        learner = countdown_learner(alg, use_cuda=use_cuda, disc_grad_penalty=0.0, nu_grad_penalty=0.0)
        assert learner.device.type == ("cuda" if use_cuda else "cpu")
        runs.append([learner.train({"data": union, "expert": expert}, step, step) for step in range(3)])
        learners.append(learner)
    for cpu, gpu in zip(*runs):
        assert gpu == pytest.approx(cpu, rel=1e-3, abs=1e-5)
    cpu, gpu = learners
    np.testing.assert_allclose(gpu.expert_weight_mean(union, expert).cpu().numpy(),
                               cpu.expert_weight_mean(union, expert).numpy(), rtol=1e-3)
    # a checkpoint written on the GPU resumes on the CPU with the same weights, and the next update matches
    gpu.save_models(str(tmp_path))
    resumed = countdown_learner(alg, disc_grad_penalty=0.0, nu_grad_penalty=0.0)
    resumed.load_models(str(tmp_path))
    assert all(th.equal(a, b) for a, b in zip(all_weights(gpu).values(), all_weights(resumed).values()))
    assert resumed.train({"data": union, "expert": expert}, 3, 3) == pytest.approx(
        gpu.train({"data": union, "expert": expert}, 3, 3), rel=1e-3, abs=1e-5)
    # with the penalty on, CUDA steps stay finite
    penalised = countdown_learner(alg, use_cuda=True)
    for step in range(3):
        stats = penalised.train({"data": union, "expert": expert}, step, step)
    assert all(np.isfinite(v) for v in stats.values() if isinstance(v, float))


def test_a_run_that_ends_before_the_policy_stage_warns(caplog):
    """offline_steps within the discriminator and value stages: allowed (a run in parts resumes into the policy
    stage), but the run says that its policy is not trained; past them, no warning."""
    caplog.set_level(logging.WARNING)
    make_ctx("misodice", "climbing", env_args={"episode_limit": 10}, **TINY, offline_steps=6, disc_steps=3,
             nu_steps=3)
    assert "offline_steps=6 ends before the policy stage" in caplog.text and "offline_steps > 6" in caplog.text
    caplog.clear()
    make_ctx("misodice", "climbing", env_args={"episode_limit": 10}, **TINY, offline_steps=7, disc_steps=3,
             nu_steps=3)
    assert "policy stage" not in caplog.text
