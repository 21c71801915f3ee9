"""Stitching generated segments into full episodes (CODI, Algorithm 2).

Each trajectory starts at o_0, the first observation of a random source episode, with return-to-go R = the target.
A segment x = [o_0, o_1, .., o_{H-1}] is sampled from (o_0, R); if it passes the dynamics check it adds its H-1
transitions (actions â from the inverse model, rewards r̂ from the reward model), R <- R - Σr̂, and its last
observation starts the next segment. Many trajectories are in flight as one batch (`batch_size` slots): every
sampler call denoises one segment per slot, so a slot whose segment failed is re-denoised with fresh noise while
the others move on (only failing rows are re-denoised). After `max_resamples` re-denoisings of one segment the
trajectory is dropped and its slot restarts from a new o_0. An episode ends at `episode_limit` transitions (a
truncation; the last segment is cut to fit) or at the first generated observation the env calls terminal (that
transition is the last, terminated=1). Finished and dropped slots are refilled until `n_episodes` are complete.

A segment passes iff every transition that enters the episode (up to the cut or the terminal; steps after them are
not checked) has a dynamics step error <= delta (the rule of `dynamics.passes`, restricted to the used steps) and
takes actions the env allows at that observation (an unavailable â would make an invalid dataset). With
`max_view_gap` set, its used observations must also be ones a single world explains: the env's view gap (the largest
distance between where one agent's observation puts a shared thing and where the state has it; 0 on real data) must
be <= max_view_gap. The dynamics check cannot see this: f_inv is per agent and f_fwd learns the joint obs as given,
so agents that each move plausibly through different worlds pass it (CODI spread N = 5: the landmark views
disagreed by 0.36 on average).

With `snap_obs`, the generated observations of a segment are first replaced by the ones the env would show for the
world they describe, given the segment's first (real or accepted) observation (the env hook `snap_obs`: LBF's
integer grid, where a Gaussian diffusion makes agents glide between cells; foods only vanish; levels stay), and the
checks, the actions and the rewards are computed on the snapped segment. `max_view_gap` still judges the generator's
own views, before snapping (snapped views always agree).

If `max_attempts` segments in a row are rejected, or `max_attempts` trajectories are dropped with no episode finished
in between (segments pass but never a whole episode), generation stops with a GenerationError that gives the pass
rates and the errors seen, so that a delta nothing passes never loops forever (and writes no file: generation.py).

Protocols (duck-typed; the real ones are diffusion.py, dynamics.py and the env classes):

    sampler.sample(o0 [B, n, O] float normalised, R [B] float (return-to-go in env units), generator)
        -> x [B, H, n, O] normalised, x[:, 0] == o0; fresh noise from `generator` on every call
    dynamics.infer_actions(x [B, H, n, O][, avail [B, H-1, n, A]]) -> [B, H-1, n] long (avail, when the method
        takes it: the actions the env allows at o_t, so that â is the likeliest allowed action)
    dynamics.step_errors(x, a_hat) -> [B, H-1]   (normalised-space error of each transition)
    dynamics.rewards(x, a_hat) -> [B, H-1]       (team reward, env units)
    normaliser: augmenters/codi/normaliser.py ObsNormaliser (normalise / denormalise)
    hooks (an env: envs/multiagentenv.py, or any object), called with numpy arrays in env units:
        state_from_obs(obs [N, T, n, O] from an episode's first step, actions [N, T, n]) -> [N, T, S],
        avail_actions_from_obs(obs [..., n, O]) -> [..., n, A], terminal_from_obs(obs [..., n, O]) -> [...] bool;
        with max_view_gap: view_gap_from_obs(obs [..., n, O]) -> [...] float;
        with snap_obs: snap_obs(obs [..., n, O], first=None) -> [..., n, O], the identity on real observations;
        stitching passes a segment's steps obs [B, H-1, n, O] with first = its first observation [B, n, O].
"""
import inspect
from dataclasses import dataclass

import numpy as np
import torch as th

HOOKS = ("state_from_obs", "avail_actions_from_obs", "terminal_from_obs")


class GenerationError(RuntimeError):
    """Generation cannot go on (e.g. no segment passes the dynamics check); the message says what to change.
    repeats_on_retry (main.failure_recorded): the same model, settings and seed reject the same segments; a folder
    another process holds is the exception (False: a retry after it finishes may go through)."""

    def __init__(self, message, repeats_on_retry=True):
        super().__init__(message)
        self.repeats_on_retry = repeats_on_retry


@dataclass
class StitchSettings:
    n_episodes: int
    horizon: int            # H: observations per segment (H-1 transitions)
    episode_limit: int      # T: transitions of an episode that does not terminate
    target_rtg: float       # R at o_0, env units (undiscounted)
    delta: float            # largest step error a passing segment may have
    batch_size: int = 64    # trajectories in flight
    max_resamples: int = 4  # M: re-denoisings of one failing segment before its trajectory is dropped
    max_attempts: int = 2000  # consecutive rejections, or drops with no episode finished, that stop generation
    max_view_gap: float | None = None  # largest view gap (hooks.view_gap_from_obs) of a passing segment; None: off
    snap_obs: bool = False  # generated observations replaced by hooks.snap_obs before the checks
    delta_quantile: float | None = None  # delta=auto's quantile (None: delta was given); for the advice when stuck

    def check(self):
        if self.n_episodes < 1:
            raise ValueError(f"n_episodes must be >= 1, got {self.n_episodes}")
        if self.horizon < 2:
            raise ValueError(f"the segment horizon H must be >= 2 (H-1 transitions per segment), got {self.horizon}")
        if self.horizon > self.episode_limit:
            raise ValueError(f"the segment horizon H={self.horizon} is longer than the episode limit "
                             f"{self.episode_limit}: choose H <= episode_limit")
        if self.batch_size < 1 or self.max_resamples < 0 or self.max_attempts < 1:
            raise ValueError(f"need batch_size >= 1, max_resamples >= 0, max_attempts >= 1; got {self.batch_size}, "
                             f"{self.max_resamples}, {self.max_attempts}")
        if not np.isfinite(self.target_rtg) or not np.isfinite(self.delta) or self.delta < 0:
            raise ValueError(f"target_rtg must be finite and delta finite and >= 0; got {self.target_rtg}, "
                             f"{self.delta}")
        if self.max_view_gap is not None and not (np.isfinite(self.max_view_gap) and self.max_view_gap >= 0):
            raise ValueError(f"max_view_gap must be null (off) or a finite number >= 0, got {self.max_view_gap}")
        if not isinstance(self.snap_obs, bool):
            raise ValueError(f"snap_obs must be True or False, got {self.snap_obs!r}")


COUNTERS = ("segments", "accepted", "rejected", "rejected_unavailable", "rejected_view_gap", "resamples", "dropped",
            "started", "episodes", "terminated", "truncated", "sampler_calls")


def resolve_target_rtg(spec, returns):
    """The target return-to-go: a number, or 'quantile:q' (q in [0, 1]) of the source's episode returns."""
    if isinstance(spec, str) and spec.startswith("quantile:"):
        try:
            q = float(spec[len("quantile:"):])
        except ValueError:
            q = -1.0
        if not 0 <= q <= 1:
            raise ValueError(f"target_rtg={spec}: expected quantile:q with q in [0, 1], e.g. quantile:0.9")
        returns = np.asarray(returns, dtype=np.float64)
        if len(returns) == 0:
            raise ValueError(f"target_rtg={spec}: the source dataset has no episodes")
        return float(np.quantile(returns, q))
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise ValueError(f"target_rtg={spec!r}: expected a number (return-to-go in env units, e.g. -105) or "
                         f"quantile:q of the source returns (e.g. quantile:0.9)") from None
    if not np.isfinite(value):
        raise ValueError(f"target_rtg={spec!r} is not finite")
    return value


def check_hooks(hooks, initial_obs, env_info, view_gap=False, snap=False):
    """Refuse an env without the hooks (with view_gap: also view_gap_from_obs, for max_view_gap; with snap: also
    snap_obs, which must leave the dataset's `initial_obs` as they are), or hooks whose outputs do not fit the
    dataset's shapes, by name."""
    missing = [h for h in HOOKS if not callable(getattr(hooks, h, None))]
    name = type(hooks).__name__
    if missing:
        raise ValueError(f"{name} has no {', '.join(missing)}: generation needs the env hooks {list(HOOKS)} to "
                         f"fill in state, avail_actions and terminals (exact for MPE and full-sight LBF)")
    o = np.asarray(initial_obs[:1], dtype=np.float32)  # [1, n, O]
    n, A, S = env_info["n_agents"], env_info["n_actions"], env_info["state_shape"]
    try:
        got = {"state_from_obs": np.shape(hooks.state_from_obs(o[None], np.zeros((1, 1, n), np.int64))),
               "avail_actions_from_obs": np.shape(hooks.avail_actions_from_obs(o)),
               "terminal_from_obs": np.shape(hooks.terminal_from_obs(o))}
    except NotImplementedError as e:  # envs.multiagentenv.ObsHooksUnsupported says which envs are supported
        raise ValueError(f"{name} cannot rebuild a dataset from generated observations: {e}") from e
    want = {"state_from_obs": (1, 1, S), "avail_actions_from_obs": (1, n, A), "terminal_from_obs": (1,)}
    if view_gap:
        fix = "set max_view_gap: null to generate without the view check"
        if not callable(getattr(hooks, "view_gap_from_obs", None)):
            raise ValueError(f"max_view_gap needs the env hook view_gap_from_obs, which {name} lacks; {fix}")
        try:
            got["view_gap_from_obs"] = np.shape(hooks.view_gap_from_obs(o))
        except NotImplementedError as e:
            raise ValueError(f"max_view_gap needs the env hook view_gap_from_obs, which {name} lacks ({e}); "
                             f"{fix}") from e
        want["view_gap_from_obs"] = (1,)
    if snap:
        _check_snap(hooks, initial_obs, name)
    bad = {k: (got[k], want[k]) for k in want if tuple(got[k]) != want[k]}
    if bad:
        raise ValueError(f"{name}'s hooks return shapes that do not fit the dataset (got, expected): {bad}")


def _check_snap(hooks, real_obs, name):
    fix = "set snap_obs: False to generate without it"
    if not callable(getattr(hooks, "snap_obs", None)):
        raise ValueError(f"snap_obs needs the env hook snap_obs, which {name} lacks; {fix}")
    o = np.asarray(real_obs, dtype=np.float32)
    try:  # alone, and as the one step after itself (stitching passes each segment's first observation)
        snapped = np.asarray(hooks.snap_obs(o), dtype=np.float32)
        after_first = np.asarray(hooks.snap_obs(o[:, None], first=o), dtype=np.float32)
    except NotImplementedError as e:
        raise ValueError(f"snap_obs needs the env hook snap_obs, which {name} lacks ({e}); {fix}") from e
    if snapped.shape != o.shape or after_first.shape != o[:, None].shape:
        raise ValueError(f"{name}.snap_obs returns shapes {snapped.shape} and {after_first.shape} for observations "
                         f"of shape {o.shape} and {o[:, None].shape} (with first); {fix}")
    moved = max(float(np.abs(snapped - o).max()), float(np.abs(after_first[:, 0] - o).max())) if o.size else 0.0
    if moved > 1e-5 * max(1.0, float(np.abs(o).max())):
        raise ValueError(f"{name}.snap_obs moves the dataset's real observations (by up to {moved:.3g}): it does not "
                         f"fit this observation layout; {fix}")


class _Slots:
    """The trajectories in flight, in normalised space, on the host (one copy per sampler call, not per step)."""

    def __init__(self, B, T, n, O):
        self.active = np.zeros(B, dtype=bool)
        self.obs = np.zeros((B, T + 1, n, O), dtype=np.float32)
        self.actions = np.zeros((B, T, n), dtype=np.int64)
        self.reward = np.zeros((B, T), dtype=np.float32)
        self.length = np.zeros(B, dtype=np.int64)   # transitions so far
        self.rtg = np.zeros(B, dtype=np.float64)
        self.tries = np.zeros(B, dtype=np.int64)    # failed attempts at the current segment


def stitch(sampler, dynamics, normaliser, hooks, initial_obs, settings, rng, generator, device="cpu", progress=None):
    """Generate `settings.n_episodes` episodes. initial_obs [E0, n, O] (env units): the o_0 pool; rng: a
    np.random.Generator (o_0 choices); generator: the torch.Generator handed to the sampler; progress: called with
    the counters after every sampler call (generation.py draws a bar and logs a line from them).

    Returns (arrays, counters): arrays in the dataset layout, episodes in the order they finished:
    obs [N, T+1, n, O], state [N, T+1, S], actions [N, T+1, n, 1], avail_actions [N, T+1, n, A] uint8,
    reward/terminated/truncated/filled [N, T+1, 1]; counters: a dict (COUNTERS)."""
    settings.check()
    s = settings
    initial_obs = np.asarray(initial_obs, dtype=np.float32)
    E0, n, O = initial_obs.shape
    T, H, B = s.episode_limit, s.horizon, min(s.batch_size, s.n_episodes)
    init_norm = np.asarray(normaliser.normalise(initial_obs), dtype=np.float32)
    infer_takes_avail = "avail" in inspect.signature(dynamics.infer_actions).parameters
    slots = _Slots(B, T, n, O)
    counters = dict.fromkeys(COUNTERS, 0)
    finished = []  # (obs normalised [L+1, n, O], actions [L, n], reward [L], terminated)
    rejected_errors = []  # largest used-step error of recent rejected segments (for the error message)
    run_of_rejections, drops_since_finish = 0, 0

    def start(b):
        slots.obs[b] = 0.0
        slots.obs[b, 0] = init_norm[rng.integers(E0)]
        slots.length[b], slots.rtg[b], slots.tries[b], slots.active[b] = 0, s.target_rtg, 0, True
        counters["started"] += 1

    for b in range(B):
        start(b)
    while len(finished) < s.n_episodes:
        rows = np.flatnonzero(slots.active)
        o0 = slots.obs[rows, slots.length[rows]]
        with th.no_grad():
            x = sampler.sample(th.as_tensor(o0, device=device), th.as_tensor(slots.rtg[rows], dtype=th.float32,
                                                                             device=device), generator)
            if tuple(x.shape) != (len(rows), H, n, O):
                raise ValueError(f"the sampler returned segments of shape {tuple(x.shape)}, expected "
                                 f"{(len(rows), H, n, O)} (batch, H, n_agents, obs)")
            x_host = x.detach().cpu().numpy().astype(np.float32)
            raw_next = normaliser.denormalise(x_host[:, 1:])  # the generator's own steps (max_view_gap's)
            if s.snap_obs:  # o_0 is real (and x[:, 0] must stay o0 exactly): only the generated steps are snapped
                snapped = hooks.snap_obs(raw_next, first=normaliser.denormalise(x_host[:, 0]))
                x_host[:, 1:] = np.asarray(normaliser.normalise(np.asarray(snapped, dtype=np.float32)), np.float32)
                x = th.as_tensor(x_host, dtype=x.dtype, device=x.device)
            # the env's allowed actions at o_t (from the observation), so that â can be restricted to them
            avail = np.asarray(hooks.avail_actions_from_obs(normaliser.denormalise(x_host[:, :-1])))
            if infer_takes_avail:
                a_hat = dynamics.infer_actions(x, avail=th.as_tensor(avail, device=x.device))
            else:
                a_hat = dynamics.infer_actions(x)
            err = dynamics.step_errors(x, a_hat)
            r_hat = dynamics.rewards(x, a_hat)
        x, a_hat = x_host, a_hat.detach().cpu().numpy().astype(np.int64)
        err = err.detach().cpu().double().numpy()
        r_hat = r_hat.detach().cpu().numpy().astype(np.float32)
        if not np.allclose(x[:, 0], o0, atol=1e-5):
            raise ValueError("the sampler changed the segments' first observation: x[:, 0] must equal o0 "
                             "(it is inpainted, not generated)")
        counters["sampler_calls"] += 1
        counters["segments"] += len(rows)
        counters["resamples"] += int((slots.tries[rows] > 0).sum())

        # how many transitions of each segment enter its episode: up to the cut at T or the first terminal
        env_next = normaliser.denormalise(x[:, 1:]) if s.snap_obs else raw_next  # unsnapped: the same array
        terminal = np.asarray(hooks.terminal_from_obs(env_next), dtype=bool).reshape(len(rows), H - 1)
        first_terminal = np.where(terminal.any(1), terminal.argmax(1) + 1, H)
        used = np.minimum(np.minimum(H - 1, T - slots.length[rows]), first_terminal)
        ends_terminal = first_terminal <= used
        mask = np.arange(H - 1)[None, :] < used[:, None]
        taken = np.take_along_axis(avail, a_hat[..., None], axis=-1)[..., 0] != 0  # [b, H-1, n]
        ok_avail = (taken.all(2) | ~mask).all(1)
        ok_err = ((err <= s.delta) | ~mask).all(1)
        ok = ok_avail & ok_err
        if s.max_view_gap is not None:
            gap = np.asarray(hooks.view_gap_from_obs(raw_next), dtype=np.float64).reshape(len(rows), H - 1)
            ok_view = ((gap <= s.max_view_gap) | ~mask).all(1)
            counters["rejected_view_gap"] += int((ok_avail & ok_err & ~ok_view).sum())
            ok &= ok_view
        counters["accepted"] += int(ok.sum())
        counters["rejected"] += int((~ok).sum())
        counters["rejected_unavailable"] += int((~ok_avail).sum())
        if ok.any():
            run_of_rejections = 0
        else:
            run_of_rejections += len(rows)
        worst = np.where(mask, err, -np.inf).max(1)
        rejected_errors = (rejected_errors + worst[~ok_err].tolist())[-1000:]
        if run_of_rejections >= s.max_attempts:
            raise GenerationError(_stuck(f"the last {run_of_rejections} segments all failed the checks",
                                         counters, rejected_errors, s))

        for i, b in enumerate(rows):
            if not ok[i]:
                slots.tries[b] += 1
                if slots.tries[b] > s.max_resamples:  # drop the trajectory; the slot restarts from a new o_0
                    counters["dropped"] += 1
                    drops_since_finish += 1
                    if drops_since_finish >= s.max_attempts:
                        raise GenerationError(_stuck(f"{drops_since_finish} trajectories were dropped (each after "
                                                     f"{s.max_resamples} re-denoisings of a failing segment) and no "
                                                     f"episode finished", counters, rejected_errors, s))
                    slots.active[b] = False
                    start(b)
                continue
            L, u = slots.length[b], used[i]
            slots.obs[b, L + 1:L + 1 + u] = x[i, 1:1 + u]
            slots.actions[b, L:L + u] = a_hat[i, :u]
            slots.reward[b, L:L + u] = r_hat[i, :u]
            slots.length[b] = L + u
            slots.rtg[b] -= float(r_hat[i, :u].astype(np.float64).sum())
            slots.tries[b] = 0
            if ends_terminal[i] or slots.length[b] >= T:
                Lb = slots.length[b]
                finished.append((slots.obs[b, :Lb + 1].copy(), slots.actions[b, :Lb].copy(),
                                 slots.reward[b, :Lb].copy(), bool(ends_terminal[i])))
                counters["episodes"] += 1
                drops_since_finish = 0
                counters["terminated" if ends_terminal[i] else "truncated"] += 1
                slots.active[b] = False
                if len(finished) + int(slots.active.sum()) < s.n_episodes:
                    start(b)
        if progress is not None:
            progress(counters)
    return episode_arrays(finished, normaliser, hooks, T), counters


def episode_arrays(finished, normaliser, hooks, T):
    """Finished trajectories -> arrays in the dataset layout (see stitch), with state / avail_actions from the
    hooks on the denormalised observations."""
    N = len(finished)
    n, O = finished[0][0].shape[1:]
    obs = np.zeros((N, T + 1, n, O), dtype=np.float32)
    actions = np.zeros((N, T + 1, n, 1), dtype=np.int64)
    reward = np.zeros((N, T + 1, 1), dtype=np.float32)
    terminated = np.zeros((N, T + 1, 1), dtype=np.uint8)
    filled = np.zeros((N, T + 1, 1), dtype=np.uint8)
    truncated = np.zeros((N, T + 1, 1), dtype=np.uint8)
    for e, (o, a, r, term) in enumerate(finished):
        L = len(a)
        obs[e, :L + 1] = normaliser.denormalise(o)
        actions[e, :L, :, 0] = a
        reward[e, :L, 0] = r
        filled[e, :L + 1] = 1
        terminated[e, L - 1] = int(term)
        truncated[e, L - 1] = int(not term)
    valid = filled[..., 0].astype(bool)
    # the hooks see real observations only: steps past an episode's end repeat its final observation (then zeroed)
    last = valid.sum(1) - 1
    steps = np.minimum(np.arange(T + 1)[None, :], last[:, None])
    real_obs = np.take_along_axis(obs, steps[:, :, None, None], axis=1)
    state = np.asarray(hooks.state_from_obs(real_obs, actions[..., 0]), dtype=np.float32) * valid[..., None]
    avail = np.asarray(hooks.avail_actions_from_obs(real_obs)).astype(np.uint8) * valid[..., None, None]
    return {"obs": obs, "state": state, "actions": actions, "avail_actions": avail, "reward": reward,
            "terminated": terminated, "filled": filled, "truncated": truncated}


def _stuck(what, counters, rejected_errors, settings):
    errs = np.asarray(rejected_errors, dtype=np.float64)
    nonfinite = int((~np.isfinite(errs)).sum())
    errs = errs[np.isfinite(errs)]
    seen = (f"; the largest step error of rejected segments: 10%/50%/90% quantiles "
            f"{np.quantile(errs, 0.1):.4g}/{np.quantile(errs, 0.5):.4g}/{np.quantile(errs, 0.9):.4g}"
            if len(errs) else "")
    suggest = f" (e.g. delta={np.quantile(errs, 0.5):.3g} would pass about half of them)" if len(errs) else ""
    rate = counters["accepted"] / max(1, counters["segments"])
    delta, gap = settings.delta, settings.max_view_gap
    view = (f", {counters['rejected_view_gap']} passed δ and the action check but failed max_view_gap={gap:g}"
            if gap is not None else "")
    advice = []
    if gap is not None and counters["rejected_view_gap"]:
        advice.append("raise max_view_gap (null: off)")
    if nonfinite:  # NaN or infinite samples: no delta passes them, the conditions drove the sampler off
        advice.append(f"{nonfinite} of the rejected segments were not finite (NaN or infinite), which no delta "
                      f"passes: choose target_rtg (now {settings.target_rtg:.4g}) inside the source's returns (e.g. "
                      f"quantile:0.9) and guidance_weights near the preset's 1.2")
    if len(errs) or not advice:  # some segments failed δ
        if settings.delta_quantile is None:
            advice.append(f"raise delta{suggest} or use delta=auto (a quantile of the error on real transitions)")
        else:
            advice.append(f"raise delta_quantile (delta=auto took the {settings.delta_quantile:g} quantile of the "
                          f"error on real transitions) or give delta a number{suggest}")
    return (f"generation stopped: {what} (delta={delta:g}); pass rate "
            f"{counters['accepted']}/{counters['segments']} = {rate:.2%} overall, "
            f"{counters['rejected_unavailable']} rejected for unavailable actions{view}, {counters['dropped']} "
            f"trajectories dropped{seen}. To go on: {'; '.join(advice)}; or train the diffusion and dynamics models "
            f"longer. No dataset was written.")

