"""CODI's segment diffusion model (paper 000, Sec. 3.2): training, EMA, and guided sampling with diffusers schedulers.

x = normalised joint observations of an H-step segment, [B, H, n, O] (augmenters/codi/normaliser.py). The
ε-network is modules.diffusion.TemporalUNet; this module owns everything around it:

* Training (ε-prediction MSE): k ~ U{0..K-1}, x_k = DDPMScheduler.add_noise(x_0, ε, k). The first observation
  x[:, 0] and the dimensions the normaliser marks constant are *inpainted* (kept clean in x_k) and left out of the
  loss, as are steps past the episode end (obs_valid False).
* Conditions: R (return-to-go from the segment start to the episode end, undiscounted as in the paper) and the
  per-agent labels z [B, n]. Each z dimension is masked with p = `label_drop` (0.25, the paper), and with
  p = `p_uncond` the whole condition (R and all of z) is masked, which trains the unconditional branch ε(x, k).
* EMA of the weights, MADiff's: decay 0.995 every `ema_every` = 10 steps, a plain copy for the first
  `ema_start` = 2000 steps; sampling uses the EMA network.
* Sampling: `DDPMScheduler` (ancestral) or `DDIMScheduler` (deterministic, eta = 0), both with
  timestep_spacing="trailing" so the first step starts at k = K-1. x[:, 0] = o_0 and the constant dimensions are
  re-inpainted after every step. No host sync inside the denoising loop (the step indices are Python ints taken
  once; the noise comes from a generator on the model's device).

Guidance (one batch of all branches per denoising step, rows [uncond; cond_1; ...]):

    compose      ε̂ = ε(x,k) + Σ_i w_i [ε(x,k | R, z⁽ⁱ⁾) − ε(x,k)],  z⁽ⁱ⁾ = "z_i = 1, other dims masked" (Eq. 8)
                 (augmenters codi, codi_privileged; n + 1 branches)
    all_ones     ε̂ = ε(x,k) + w [ε(x,k | R, z = 1) − ε(x,k)]  (codi_no_comp, the paper's "w/o comp."; 2 branches)
    return_only  ε̂ = ε(x,k) + w [ε(x,k | R) − ε(x,k)], z all masked (madiff_like; 2 branches)

Decisions:

* p_uncond = 0.1 (not in the paper). With only per-dimension drops the fully unconditional input would occur with
  probability 0.25^n (1.6 % for n = 3), too rarely to learn ε(x, k); 0.1 is the usual classifier-free rate
  (composable diffusion drops 5-10 %), and it leaves 90 % of the batches for the conditional branches.
* `label_keep_one` (default 0, the paper): the probability that a training row keeps exactly one random agent's
  label and masks the others, the input each composed branch z⁽ⁱ⁾ gives. Per-dimension drops alone give branch i's
  pattern (z_i kept, every other label masked) in 0.75 · 0.25^(n-1) of the rows (4.7 % at n = 3, 1.2 % at n = 4,
  0.3 % at n = 5), so at larger n the composed branches ask for an input the network has barely seen. In the config
  only when on (a checkpoint made before the option existed keeps matching); its RNG draws are made only when on and
  labels are given (default runs and madiff_like are unchanged).
* Σ w_i grows with n: the default is w_i = w for every agent (Eq. 8 as written, "equal weights"), so composing
  n agents pushes n times as hard as one term. A per-agent list can keep the total fixed (w_i = w / n) or favour
  agents. The single-term modes take a scalar w.
* R is embedded as R / `returns_scale`; `returns_scale_from(rtg)` gives max |RTG| of the training segments, so
  the scaled training values lie in [-1, 1] (MADiff divides by a hand-set per-dataset constant instead). A target
  RTG outside the data's range is extrapolated by the network; choose targets from the source returns.
* Agent i's label enters only agent i's stream (the network is shared across agents), so "z = all ones" is
  close to a product of per-agent conditions already: on the 2-agent toy of the tests all_ones scores as compose
  (0.96-0.98 (good, good) vs 0.01-0.04 for return_only, 3 seeds). codi_no_comp may therefore trail codi by less
  than in the paper, whose network may have read z as one vector.
* The initial noise has unit variance (MADiff scales it by 0.5; we keep the schedulers' own noise throughout).
* DDIM with trailing spacing is exact only when its step count divides K (diffusers steps by K // n_steps); other
  counts (MADiff's 15 of 200) warn once and land up to one step off the next timestep.
"""
import copy
import warnings

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from modules.diffusion import TemporalUNet

GUIDANCE_MODES = ("compose", "all_ones", "return_only")
SAMPLERS = ("ddpm", "ddim")


def returns_scale_from(rtg):
    """max |RTG| over the training segments (>= 1e-6): R / scale lies in [-1, 1] on the data."""
    return max(float(np.max(np.abs(np.asarray(rtg, dtype=np.float64)))) if np.size(rtg) else 1.0, 1e-6)


def guidance_weight_vector(guidance, weights, n_agents):
    """The weight of each conditional branch: [n] for compose (a scalar is repeated), [1] for the other modes."""
    if guidance not in GUIDANCE_MODES:
        raise ValueError(f"unknown guidance {guidance!r}: choose one of {', '.join(GUIDANCE_MODES)}")
    w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if w.ndim != 1 or not np.isfinite(w).all():
        raise ValueError(f"guidance_weights must be a finite scalar or a per-agent list, got {weights!r}")
    if guidance == "compose":
        if len(w) == 1:
            return np.repeat(w, n_agents)
        if len(w) != n_agents:
            raise ValueError(f"guidance_weights has {len(w)} entries for {n_agents} agents: give one per agent "
                             f"or a scalar")
        return w
    if len(w) > 1 and not np.allclose(w, w[0]):
        raise ValueError(f"{guidance} guidance has a single term: give a scalar guidance_weights (got {weights!r})")
    return w[:1]


def guidance_branches(guidance, R, n_agents):
    """Conditions of the branches of one guided step, rows [uncond; cond_1; ...] each repeated for the B segments.

    R [B] (already scaled) -> dict of R [b*B], R_given [b*B] bool, z [b*B, n], z_given [b*B, n] bool, where b is
    the number of branches: n + 1 for compose, 2 otherwise.
    """
    B, device = R.shape[0], R.device
    if guidance == "compose":
        b = n_agents + 1
        z_given = torch.cat([torch.zeros(1, n_agents, dtype=torch.bool, device=device),
                             torch.eye(n_agents, dtype=torch.bool, device=device)])  # [b, n]: z⁽ⁱ⁾ = e_i
    elif guidance in ("all_ones", "return_only"):
        b = 2
        z_given = torch.zeros(2, n_agents, dtype=torch.bool, device=device)
        z_given[1] = guidance == "all_ones"
    else:
        raise ValueError(f"unknown guidance {guidance!r}: choose one of {', '.join(GUIDANCE_MODES)}")
    R_given = torch.arange(b, device=device) > 0  # only the unconditional row masks R
    return {
        "R": R.repeat(b),
        "R_given": R_given.repeat_interleave(B),
        "z": z_given.float().repeat_interleave(B, dim=0),  # a given label is 1 (good); masked ones are ignored
        "z_given": z_given.repeat_interleave(B, dim=0),
    }


class SegmentDiffusion:
    """Conditional diffusion over joint-observation segments x [B, H, n, O] (normalised), with EMA and guidance.

    `generated` [n, O] or [O] bool: the dimensions the model produces (ObsNormaliser.generated); the others are
    copied from o_0. `network` replaces the TemporalUNet (any module with its forward signature; tests use an
    analytic one). `device` is where the model, its RNG and sampling live ("cuda" when use_cuda).
    """

    def __init__(self, n_agents, obs_dim, horizon, generated=None, *, dim=32, dim_mults=(1, 2), kernel_size=5,
                 attention=True, n_timesteps=50, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                 returns_scale=1.0, label_drop=0.25, p_uncond=0.1, label_keep_one=0.0, lr=2e-4, ema_decay=0.995,
                 ema_every=10, ema_start=2000, device="cpu", seed=0, network=None):
        if horizon < 2:
            raise ValueError(f"horizon must be >= 2 (step 0 is the given o_0), got {horizon}")
        if not returns_scale > 0:
            raise ValueError(f"returns_scale must be > 0, got {returns_scale}: use returns_scale_from(rtg)")
        if not (0 <= label_drop <= 1 and 0 <= p_uncond <= 1 and 0 <= label_keep_one <= 1):
            raise ValueError(f"label_drop, p_uncond and label_keep_one are probabilities, got {label_drop}, "
                             f"{p_uncond}, {label_keep_one}")
        self.device = torch.device(device)
        self.config = dict(n_agents=n_agents, obs_dim=obs_dim, horizon=horizon, dim=dim, dim_mults=list(dim_mults),
                           kernel_size=kernel_size, attention=attention, n_timesteps=n_timesteps,
                           beta_schedule=beta_schedule, clip_sample=clip_sample, returns_scale=float(returns_scale),
                           label_drop=label_drop, p_uncond=p_uncond, lr=lr, ema_decay=ema_decay,
                           ema_every=ema_every, ema_start=ema_start)
        if label_keep_one:
            self.config["label_keep_one"] = float(label_keep_one)
        gen = np.ones((n_agents, obs_dim), bool) if generated is None else np.asarray(generated, bool)
        gen = np.broadcast_to(gen, (n_agents, obs_dim))
        # True where a value is given, not generated: step 0 (o_0) and the constant dimensions
        fixed = np.zeros((horizon, n_agents, obs_dim), bool)
        fixed[0] = True
        fixed[:, ~gen] = True
        self.fixed = torch.as_tensor(fixed, device=self.device)  # [H, n, O]

        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global RNG
            torch.manual_seed(seed)
            self.net = (network if network is not None else
                        TemporalUNet(obs_dim, dim, dim_mults, kernel_size, attention)).to(self.device)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimiser = torch.optim.Adam(params, lr=lr, foreach=True) if params else None
        self.rng = torch.Generator(device=self.device).manual_seed(seed)  # training noise, k and drops
        self.steps = 0
        self.schedule = dict(num_train_timesteps=n_timesteps, beta_schedule=beta_schedule, clip_sample=clip_sample,
                             prediction_type="epsilon", timestep_spacing="trailing")
        self.noise_scheduler = DDPMScheduler(**self.schedule)

    # ------------------------------------------------------------------ training

    def _batch(self, batch):
        """Tensors on the device: x [B,H,n,O], R [B] scaled, obs_valid [B,H], z [B,n] or None."""
        x = torch.as_tensor(batch["x"], dtype=torch.float32, device=self.device)
        B, H, n, O = x.shape
        if (H, n, O) != tuple(self.fixed.shape):
            raise ValueError(f"batch x has shape [B, {H}, {n}, {O}]; this model was built for "
                             f"[B, {', '.join(map(str, self.fixed.shape))}] (horizon, n_agents, obs_dim)")
        R = torch.as_tensor(batch["R"], dtype=torch.float32, device=self.device).reshape(B)
        valid = batch.get("obs_valid")
        valid = (torch.ones(B, H, dtype=torch.bool, device=self.device) if valid is None
                 else torch.as_tensor(valid, dtype=torch.bool, device=self.device).reshape(B, H))
        z = batch.get("z")
        z = None if z is None else torch.as_tensor(z, dtype=torch.float32, device=self.device).reshape(B, n)
        return x, R / self.config["returns_scale"], valid, z

    def loss(self, batch):
        """ε-MSE over the generated entries of one batch: dict x [B,H,n,O] (normalised), R [B] (raw RTG),
        optional obs_valid [B,H] bool and z [B,n] (labels; None/absent = never given, as madiff_like)."""
        x0, R, valid, z = self._batch(batch)
        B, H, n, _ = x0.shape
        noise = torch.randn(x0.shape, generator=self.rng, device=self.device)
        k = torch.randint(0, self.config["n_timesteps"], (B,), generator=self.rng, device=self.device)
        xk = torch.where(self.fixed, x0, self.noise_scheduler.add_noise(x0, noise, k))
        uncond = torch.rand(B, generator=self.rng, device=self.device) < self.config["p_uncond"]
        label_kept = torch.rand(B, n, generator=self.rng, device=self.device) >= self.config["label_drop"]
        if z is not None and self.config.get("label_keep_one"):  # the composed branches' input: one label given
            one = torch.rand(B, generator=self.rng, device=self.device) < self.config["label_keep_one"]
            pick = torch.randint(0, n, (B,), generator=self.rng, device=self.device)
            label_kept = torch.where(one[:, None], torch.nn.functional.one_hot(pick, n).bool(), label_kept)
        if z is None:
            z, z_given = torch.zeros(B, n, device=self.device), torch.zeros(B, n, dtype=torch.bool, device=self.device)
        else:
            z_given = label_kept & ~uncond[:, None]
        eps = self.net(xk, k, R, ~uncond, z, z_given)
        weight = (~self.fixed)[None] & valid[:, :, None, None]  # [B, H, n, O]
        return ((eps - noise) ** 2 * weight).sum() / weight.sum().clamp(min=1)

    def train_step(self, batch):
        """One Adam step on `loss(batch)` and an EMA update; returns {"loss": float}. A non-finite loss raises
        before the weights change, and non-finite EMA weights (the sampling weights) after an EMA update, so the last
        checkpoint stays the one to resume from."""
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion loss is {loss.item()} at step {self.steps}: lower lr, check the "
                                     f"normaliser and returns_scale, and resume from the last checkpoint")
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.steps += 1
        self._update_ema()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def _update_ema(self):
        """Every `ema_every` steps (MADiff): a plain copy until `ema_start`, then ema <- ema + (1-decay)(net - ema)."""
        c = self.config
        if self.steps % c["ema_every"]:
            return
        ema, net = list(self.ema.parameters()), list(self.net.parameters())
        if self.steps <= c["ema_start"]:
            torch._foreach_copy_(ema, net)
        else:
            torch._foreach_lerp_(ema, net, 1.0 - c["ema_decay"])
        for e, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            e.copy_(b)
        bad = self.nonfinite(ema=True)
        if bad:
            raise FloatingPointError(f"the EMA weights (the ones sampling uses) hold NaN or infinite values after "
                                     f"step {self.steps} ({bad}; ema_decay={c['ema_decay']}, the network "
                                     f"{'too' if self.nonfinite(ema=False) else 'finite'})")

    @torch.no_grad()
    def nonfinite(self, ema=True):
        """'' when every weight of the EMA network (ema=True) or the trained one is finite, else the first
        parameter that is not (one device sync: the norms of all parameters at once)."""
        params = list((self.ema if ema else self.net).named_parameters())
        if not params:
            return ""
        norms = torch.stack(torch._foreach_norm([p for _, p in params]))
        if bool(torch.isfinite(norms).all()):
            return ""
        return next(name for (name, _), ok in zip(params, torch.isfinite(norms).tolist()) if not ok)

    # ------------------------------------------------------------------ sampling

    def predict_eps(self, x, k, R, R_given, z, z_given, ema=True):
        """One network call (no guidance): x [N,H,n,O], k [N] int, R [N] *scaled*, R_given [N], z/z_given [N,n]."""
        return (self.ema if ema else self.net)(x, k, R, R_given, z, z_given)

    def guided_eps(self, x, k, R, guidance="compose", guidance_weights=1.2, ema=True, branches=None, weights=None):
        """ε̂ of `guidance` with all branches in one network call: x [B,H,n,O], k [B] int, R [B] *scaled*.
        `branches`/`weights` (from guidance_branches / guidance_weight_vector) skip rebuilding them each step."""
        B, H, n, O = x.shape
        if branches is None:
            branches = guidance_branches(guidance, R, n)
        if weights is None:
            weights = torch.as_tensor(guidance_weight_vector(guidance, guidance_weights, n), dtype=x.dtype,
                                      device=x.device)
        b = len(weights) + 1
        xs = x.unsqueeze(0).expand(b, B, H, n, O).reshape(b * B, H, n, O)
        eps = self.predict_eps(xs, k.repeat(b), branches["R"], branches["R_given"], branches["z"],
                               branches["z_given"], ema=ema).reshape(b, B, H, n, O)
        uncond, cond = eps[0], eps[1:]
        return uncond + (weights.view(-1, 1, 1, 1, 1) * (cond - uncond)).sum(dim=0)

    def sampling_scheduler(self, sampler="ddim", n_steps=None):
        """A fresh DDPM or DDIM scheduler (the model's schedule, trailing spacing) set to `n_steps` (default: K for
        ddpm, min(K, 10) for ddim)."""
        K = self.config["n_timesteps"]
        if sampler == "ddpm":
            scheduler, n_steps = DDPMScheduler(**self.schedule), n_steps or K
        elif sampler == "ddim":
            scheduler, n_steps = DDIMScheduler(**self.schedule), n_steps or min(K, 10)
            if K % n_steps:
                warnings.warn(f"DDIM with {n_steps} steps of K={K}: diffusers steps by K // n_steps, so with a "
                              f"count that does not divide K some steps land next to the scheduled timestep; "
                              f"choose a divisor of {K}", stacklevel=2)
        else:
            raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if not 1 <= n_steps <= K:
            raise ValueError(f"n_steps must be in 1..{K} (the model's K), got {n_steps}")
        scheduler.set_timesteps(n_steps)
        return scheduler

    def _generator(self, generator):
        if generator is None or isinstance(generator, torch.Generator):
            return generator
        return torch.Generator(device=self.device).manual_seed(int(generator))

    @torch.no_grad()
    def sample(self, o0, R, guidance="compose", guidance_weights=1.2, sampler="ddim", n_steps=None, generator=None,
               ema=True, project=None):
        """Segments starting at `o0 [B, n, O]` (normalised) for target returns `R` ([B] or a scalar, raw RTG).

        Returns x [B, H, n, O] on the model's device with x[:, 0] == o0 exactly and the constant dimensions copied
        from o0. `generator`: a torch.Generator on the model's device, an int seed, or None (global RNG).
        `project`: None, or a linear projection of normalised segments (views.ViewProjection) applied to the clean
        estimate x̂_0 of every denoising step (the step then goes on from the projected x̂_0) and to the result.
        """
        o0 = torch.as_tensor(o0, dtype=torch.float32, device=self.device)
        H, n, O = self.fixed.shape
        if o0.ndim != 3 or tuple(o0.shape[1:]) != (n, O):
            raise ValueError(f"o0 must be [B, {n}, {O}] (normalised first observations), got {tuple(o0.shape)}")
        B = o0.shape[0]
        R = torch.as_tensor(R, dtype=torch.float32, device=self.device).reshape(-1).expand(B)
        R = R / self.config["returns_scale"]
        branches = guidance_branches(guidance, R, n)
        weights = torch.as_tensor(guidance_weight_vector(guidance, guidance_weights, n), dtype=torch.float32,
                                  device=self.device)
        scheduler = self.sampling_scheduler(sampler, n_steps)
        gen = self._generator(generator)
        given = o0[:, None].expand(B, H, n, O)

        x = torch.randn((B, H, n, O), generator=gen, device=self.device)
        x = torch.where(self.fixed, given, x)
        for t in scheduler.timesteps.tolist():  # Python ints: nothing in the loop waits for the device
            k = torch.full((B,), t, dtype=torch.long, device=self.device)
            eps = self.guided_eps(x, k, R, ema=ema, branches=branches, weights=weights)
            if project is not None:
                eps = self._projected_eps(x, eps, float(scheduler.alphas_cumprod[t]), project, given)
            x = scheduler.step(eps, t, x, generator=gen).prev_sample
            x = torch.where(self.fixed, given, x)
        if project is not None:
            x = torch.where(self.fixed, given, project(x))
        return x

    def _projected_eps(self, x, eps, alpha_bar, project, given):
        """The ε whose clean estimate x̂_0 = (x - √(1-ᾱ) ε) / √ᾱ is project(x̂_0) (clipped first when the schedule
        clips, the inpainted dims kept), for DDPM and DDIM alike. Projecting x̂_0 rather than the noisy x lets every
        later step denoise the agents in one shared world. The scheduler clips again, which can move a projected
        value that left [-1, 1]; sample() projects its result once more, so the constraint holds at the end."""
        if not 0.0 < alpha_bar < 1.0:
            raise ValueError(f"project needs 0 < alpha_bar < 1 at every sampled step, got {alpha_bar} (a zero-SNR "
                             f"schedule): sample without project")
        a, b = alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5
        x0 = (x - b * eps) / a
        if self.schedule["clip_sample"]:
            x0 = x0.clamp(-1.0, 1.0)
        x0 = torch.where(self.fixed, given, project(x0))
        return (x - a * x0) / b

    # ------------------------------------------------------------------ checkpoints

    def n_parameters(self):
        return sum(p.numel() for p in self.net.parameters())

    def scheduler_config(self):
        """The noise schedule (diffusers DDPMScheduler config) for the run's artefacts."""
        return dict(self.noise_scheduler.config)

    def state_dict(self):
        """Everything needed to resume training exactly: weights, EMA, optimiser, step count, RNG, config."""
        return {"config": dict(self.config), "network": self.net.state_dict(), "ema": self.ema.state_dict(),
                "optimiser": None if self.optimiser is None else self.optimiser.state_dict(),
                "steps": self.steps, "rng": self.rng.get_state()}

    def load_state_dict(self, state):
        keys = dict.fromkeys([*self.config, *state["config"]])  # both ways: an option on in only one of them differs
        mismatch = {k: (self.config.get(k), state["config"].get(k)) for k in keys
                    if state["config"].get(k) != self.config.get(k)}
        if mismatch:
            raise ValueError("diffusion checkpoint does not match this model's config (this, checkpoint): "
                             + ", ".join(f"{k}={a!r} vs {b!r}" for k, (a, b) in mismatch.items())
                             + "; build the model with the checkpoint's settings")
        self.net.load_state_dict(state["network"])
        self.ema.load_state_dict(state["ema"])
        if self.optimiser is not None:
            self.optimiser.load_state_dict(state["optimiser"])
        self.steps = int(state["steps"])
        self.rng.set_state(state["rng"])


__all__ = ["GUIDANCE_MODES", "SAMPLERS", "SegmentDiffusion", "guidance_branches", "guidance_weight_vector",
           "returns_scale_from"]
