"""Pieces of the DICE imitation learners (MisoDICE, INDD): the value objective in its two forms, the closed-form
weights, gradient penalties and the input normaliser (research notes offline.md §5: DemoDICE and its stabilisers).

Reductions run over real transitions (`mask`) and over every axis but the last, so a value of shape [B, T, k]
gives k objectives: k = 1 for a mixed (global) quantity, k = n for independent agents (INDD).
"""
import math

import numpy as np
import torch as th
from torch import nn


def masked_means(x, mask):
    """[..., k] -> [k]: the mean over real entries of every column."""
    mask = mask.expand_as(x)
    dims = tuple(range(x.dim() - 1))
    return (x * mask).sum(dims) / mask.sum(dims).clamp(min=1)


def masked_max(x, mask):
    """[..., k] -> [k] (detached): the largest real entry of every column."""
    dims = tuple(range(x.dim() - 1))
    return x.detach().masked_fill(mask.expand_as(x) == 0, -float("inf")).amax(dims).clamp(min=-1e30)


def exp_linear(x, clip):
    """exp(x) up to x = clip, then its tangent e^clip (1 + x - clip): convex, finite and with a positive gradient
    for any x, so one huge advantage neither overflows the loss nor stops its gradient (a clamp would)."""
    xc = x.clamp(max=clip)
    return th.exp(xc) + math.exp(clip) * (x - xc)


def masked_logmeanexp(x, mask):
    """[..., k] -> [k]: log of the mean of exp(x) over real entries, max-shifted (stable for any x)."""
    m = masked_max(x, mask)
    mask = mask.expand_as(x)
    return m + th.log(masked_means(th.exp((x - m).masked_fill(mask == 0, -float("inf"))), mask))


def nu_objective(adv, nu_s0, mask, alpha, gamma, form, exp_clip):
    """[k] DICE value objective per column (MisoDICE Eq. 6 with the closed-form w* of Eq. 8):

        exp:       (1 - gamma) E_s0[nu(s0)] + (1 + alpha) E_U[exp(A / (1 + alpha) - 1)]
        logsumexp: (1 - gamma) E_s0[nu(s0)] + (1 + alpha) log E_U[exp(A / (1 + alpha))]

    Same minimiser up to a constant shift of nu (the second is invariant to it; DemoDICE's released form), so the
    same normalised weights. `exp` is linear beyond `exp_clip` (exp_linear)."""
    x = adv / (1 + alpha)
    if form == "exp":
        div = masked_means(exp_linear(x - 1, exp_clip), mask)
    elif form == "logsumexp":
        div = masked_logmeanexp(x, mask)
    else:
        raise ValueError(f"nu_loss must be 'exp' or 'logsumexp', not '{form}'")
    return (1 - gamma) * nu_s0.mean(0) + (1 + alpha) * div


@th.no_grad()
def dice_weights(adv, mask, alpha, normalise, exp_clip, weight_max, pooling="transition"):
    """w = exp(A / (1 + alpha) - 1) (Eq. 8), detached. normalise: divided by its mean over real transitions
    (computed max-shifted, so any A is finite); else the exponent is clamped at exp_clip. pooling 'episode': each
    transition then takes its episode's mean weight (rows = episodes; the sum over real transitions is unchanged),
    a diagnostic against the paper's per-transition weights. Then clipped at weight_max (null: no clip). Padded
    entries are 0."""
    x = adv / (1 + alpha) - 1
    if normalise:
        w = th.exp((x - masked_max(x, mask)).masked_fill(mask.expand_as(x) == 0, -float("inf")))
        w = w / masked_means(w, mask).clamp(min=1e-30)
    else:
        w = th.exp(x.clamp(max=exp_clip)) * mask
    if pooling == "episode":
        m = mask.expand_as(w)
        w = (w * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1) * m
    return w if weight_max is None else w.clamp(max=float(weight_max))


@th.no_grad()
def weight_stats(w, mask):
    """mean, max and effective sample size fraction (sum w)^2 / (N sum w^2) of the weights over real entries."""
    mask = mask.expand_as(w)
    n = mask.sum().clamp(min=1)
    s, s2 = (w * mask).sum(), (w.pow(2) * mask).sum().clamp(min=1e-30)
    return {"w_mean": s / n, "w_max": (w * mask).max(), "w_ess": s * s / (n * s2)}


@th.no_grad()
def separation(z_e, z_u):
    """(accuracy at 0, AUC) of log-odds z_e [N_e] (expert rows) against z_u [N_u] (union rows): the accuracy the
    discriminator's loss sees, and the chance that a random expert row outranks a random union row (ties count
    half), which no shift of the log-odds changes. D_U holds D_E, so even an exact ratio stays below 1."""
    if not len(z_e) or not len(z_u):
        nan = th.tensor(float("nan"))
        return nan, nan
    z_e, z_u = z_e.double(), z_u.double()  # ranks stay exact for any batch
    acc = 0.5 * ((z_e > 0).double().mean() + (z_u < 0).double().mean())
    both = th.cat([z_e, z_u])
    order = both.argsort()
    ranks = th.empty_like(both)
    ranks[order] = th.arange(1, len(both) + 1, dtype=both.dtype, device=both.device)
    _, inverse, counts = both.unique(return_inverse=True, return_counts=True)  # average ranks over ties
    first = th.zeros_like(counts, dtype=both.dtype).scatter_reduce(0, inverse, ranks, "amin", include_self=False)
    ranks = first[inverse] + (counts[inverse] - 1) / 2
    n_e, n_u = len(z_e), len(z_u)
    auc = (ranks[:n_e].sum() - n_e * (n_e + 1) / 2) / max(n_e * n_u, 1)
    return acc, auc


def interpolates(x_e, x_u, k, discrete=0):
    """[2k, I] rows for a gradient penalty, as DemoDICE: k expert-union and k union-union interpolations of
    random real rows (global torch RNG, saved in checkpoints). The last `discrete` columns (a one-hot action) are
    not blended but taken whole from one endpoint, the first with probability u: a categorical action has no
    points between two actions."""
    ie = th.randint(len(x_e), (k,), device=x_e.device)
    iu = th.randint(len(x_u), (2, k), device=x_u.device)
    u = th.rand(2, k, 1, device=x_u.device)
    pairs = ((x_e[ie], x_u[iu[0]]), (x_u[iu[1]], x_u[iu[0]]))
    rows = [ui * a + (1 - ui) * b for ui, (a, b) in zip(u, pairs)]
    if discrete:
        pick = th.rand(2, k, 1, device=x_u.device) < u  # endpoint a with probability u
        rows = [th.cat([r[:, :-discrete], th.where(p, a[:, -discrete:], b[:, -discrete:])], -1)
                for r, p, (a, b) in zip(rows, pick, pairs)]
    return th.cat(rows).detach()


def input_gradients(net, x):
    """d net(x) / dx for rows x [N, I] of a per-agent network (seen as N one-step sequences of one agent),
    kept in the graph so that a penalty on it trains the network."""
    x = x.requires_grad_(True)
    out = net.forward_seq(x[:, None, None, :], net.init_hidden(len(x), 1))[0]
    return th.autograd.grad(out.sum(), x, create_graph=True)[0]


class Absorbing(nn.Module):
    """The absorbing state after a true terminal (DAC, Kostrikov et al. 2019): its discriminator logit and its value,
    one per column k (1 mixed, n independent); it fills the rest of a terminated episode's time limit. Without it a
    terminal ends the occupancy's flow, so the DICE value turns the weights away from episodes that finish early: on
    LBF's mixture, the expert's (95% of them end by a terminal at ~15 steps, the poor ones mostly at the 50-step
    time limit).

    Two scalars per column, each a raw parameter times its natural scale (logits up to ratio_clip, values up to
    ratio_clip / (1 - gamma)): Adam moves a raw parameter by about lr per step, so unscaled they would take ~10^5
    steps to reach LBF's nu values (~50). The learner leaves them out of gradient clipping."""

    def __init__(self, k, logit_scale, value_scale):
        super().__init__()
        self.logit_raw = nn.Parameter(th.zeros(k))
        self.value_raw = nn.Parameter(th.zeros(k))
        self.logit_scale, self.value_scale = float(logit_scale), float(value_scale)

    @property
    def logit(self):
        return self.logit_raw * self.logit_scale

    @property
    def value(self):
        return self.value_raw * self.value_scale


def absorbing_rows(ends, mask, episode_limit):
    """[B, 1, m]: how many absorbing steps each episode has: an episode whose transitions lead to the absorbing
    state (`ends` [B, T-1, 1]: a true terminal, or also a time-limit end with time_limit_end=terminal) after L
    transitions stays there for the rest of its time limit, max(episode_limit - L, 1) steps (so every episode spans
    the same horizon in D_E's and D_U's visitation); others 0. mask: [B, T-1, m]. At least one row, also for an end
    at the limit: without a self-loop row nu_abs's only gradient (from the terminal bootstrap) pushes it down."""
    ended = (ends.to(mask.device) * mask).amax(1, keepdim=True)
    return ended * (episode_limit - mask.sum(1, keepdim=True)).clamp(min=1)


def append_absorbing(x, mask, x_abs, rows):
    """(x, mask) with one more step per episode: the absorbing value x_abs [k], weighted by `rows` [B, 1, m] (the
    masked means read masks as weights)."""
    b, _, k = x.shape
    return th.cat([x, x_abs.expand(b, 1, k)], 1), th.cat([mask, rows], 1)


class Normaliser(nn.Module):
    """Observation and state standardisation by the statistics of the union data D_U (DemoDICE: mean/std of the
    imperfect data + 1e-3), fitted once before training and kept in checkpoints (buffers). Unfitted it is the
    identity, so a learner built outside `run: offline` works unchanged."""

    def __init__(self, obs_dim, state_dim, enabled=True):
        super().__init__()
        self.enabled = enabled
        for name, dim in (("obs", obs_dim), ("state", state_dim)):
            self.register_buffer(f"{name}_mean", th.zeros(dim))
            self.register_buffer(f"{name}_std", th.ones(dim))

    def fit(self, dataset, chunk=512):
        """Mean and std over the real steps of every episode (obs: over agents too)."""
        if not self.enabled:
            return
        sums = {}
        for start in range(0, len(dataset), chunk):
            arr = dataset.arrays(np.arange(start, min(len(dataset), start + chunk)), labels=False)
            real = arr["filled"][..., 0] > 0
            for name in ("obs", "state"):
                x = arr[name][real].reshape(-1, arr[name].shape[-1]).astype(np.float64)
                n, s, s2 = sums.get(name, (0, 0.0, 0.0))
                sums[name] = (n + len(x), s + x.sum(0), s2 + (x * x).sum(0))
        for name, (n, s, s2) in sums.items():
            mean = s / max(n, 1)
            std = np.sqrt(np.maximum(s2 / max(n, 1) - mean * mean, 0.0)) + 1e-3
            getattr(self, f"{name}_mean").copy_(th.as_tensor(mean))
            getattr(self, f"{name}_std").copy_(th.as_tensor(std))

    def obs(self, x):
        return (x - self.obs_mean) / self.obs_std

    def state(self, x):
        return (x - self.state_mean) / self.state_std
