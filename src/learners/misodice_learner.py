"""MisoDICE phase 2 (Bui et al. 2025, Sec. 5-6, Algorithm 1/3) and its INDD baseline (appendix B.3.3): imitation
of an expert set D_E inside an unlabeled union D_U ("expert" and "data" batches of `run: offline`).

Local networks shared across agents (inputs: o_i standardised by D_U statistics + one-hot id): discriminator
c_i(o_i, a_i) -> logit, value nu_i(o_i), actor pi_i = the mac. Mixers M_eta (`disc_mixer`) and M_phi (`mixer`) are
non-negative linear: `linear` (sum_i phi_i x_i + phi_0), `lmix` (state-dependent weights, B.3.5) or `vdn`.

    discriminator (Eq. 9, 13)  z = M_eta[c] (disc_mix: logits) | logit(sum_i eta~_i sigma(c_i)) (probs, eta~ convex)
                               loss BCE(z_E, 1) + BCE(z_U, 0) + disc_grad_penalty (|grad c| - 1)^2
                               (disc_gp_inputs=obs: the gradient in the observation only, actions kept one-hot)
    reward                     r = log D / (1 - D) = z, detached, clipped to +-ratio_clip
    value (Eq. 6-7)            A = r + gamma nu_tot(s') - nu_tot(s),  nu_tot = M_phi[nu]
                               loss (1 - gamma) E_s0[nu_tot] + (1 + alpha) E_U[exp(A / (1 + alpha) - 1)] (or logsumexp)
                               + nu_grad_penalty |grad nu|^2
    policy (Eq. 8, 11)         w = exp(A / (1 + alpha) - 1) detached (normalised, clipped), the same w for every agent:
                               loss -E_U[w sum_i log pi_i(a_i | o_i)] over available actions
    diagnostic                 w_expert_mean: the mean weight of D_E's transitions on the union's scale (1 = none)

s0 (`s0_source`): init_batch (default, as DemoDICE and the issue) = the initial states of a separate batch of
`s0_batch_size` D_U episodes (the "init" batch run: offline draws); data_batch = the t = 0 rows of the data batch's
own episodes (a uniform sample too, but only batch_size start states per step). E_s0 is their mean.
`terminated` is a true terminal, time-limit ends bootstrap (`time_limit_end: bootstrap`; `terminal` ends them as a
true terminal does: on MPE spread, 2 seeds, it changed neither the weights nor the return, README MisoDICE), padded
steps are masked by `filled`. With `absorbing` (default) a true terminal leads to an absorbing state, as DAC
(Kostrikov et al. 2019) does for imitation, which fills the rest of the episode's time limit (episode_limit - L
steps after L transitions): its logit c_abs gets those discriminator rows (expert and union batches), its value
nu_abs is the bootstrap after a terminal, and its self-loop A_abs = r_abs - (1 - gamma) nu_abs gets those rows of
the nu objective.
Without it (absorbing=False: no bootstrap after a terminal, the paper's and DemoDICE's form) the value objective
pushes the weights away from episodes that end early; on LBF those are the expert's. `schedule: sequential` trains
the discriminator for `disc_steps`, then nu for `nu_steps`, then the policy (Algorithm 1); the stage follows from the
saved update counter, so resume is exact.
`joint` trains all three every step.

INDD (`indd_learner`) is the same code with the agent axis kept: per-agent discriminator logits c_i, rewards r_i,
nu_i, advantages and weights w_i, no mixing (shared networks + id, as every learner here).
"""
import copy
import logging

import numpy as np
import torch as th
import torch.nn.functional as F

from learners.base import OfflineLearner
from learners.common import (
    NonFiniteGuard,
    TargetUpdater,
    check_actions_available,
    log_policy,
    make_optimizer,
    masked_mean,
    require_policy_actor,
    transition_mask,
)
from learners.dice import (
    Absorbing,
    Normaliser,
    absorbing_rows,
    append_absorbing,
    dice_weights,
    input_gradients,
    interpolates,
    masked_logmeanexp,
    masked_means,
    nu_objective,
    separation,
    weight_stats,
)
from learners.offline_ac import unroll, unroll_rows
from modules.critics import make_agent_critic
from modules.mixers import REGISTRY as mixer_REGISTRY
from modules.mixers.vdn import VDNMixer
from utils.checkpoint import CheckpointError

LINEAR_MIXERS = ("linear", "lmix", "vdn")
STAGES = ("disc", "nu", "actor")
PROB_EPS = 1e-6  # disc_mix: probs keeps D inside [eps, 1 - eps] before its logit


def drop_last_bias(net):
    """DemoDICE: no bias in the last layer of c and nu (the last nn.Linear of the agent network)."""
    last = [m for m in net.modules() if isinstance(m, th.nn.Linear)][-1]
    last.register_parameter("bias", None)
    return net


def mixer_weights(mixer, states, n_agents):
    """(w [..., n] >= 0, b [..., 1]) of a linear mixer."""
    if isinstance(mixer, VDNMixer):
        lead = states.shape[:-1]
        return states.new_ones(*lead, n_agents), states.new_zeros(*lead, 1)
    return mixer.weights(states)


class MisoDICELearner(OfflineLearner):
    batches = frozenset({"data", "expert"})
    agent_output_type = "pi_logits"
    reads_rewards = False  # imitation: its reward is the discriminator's log-ratio
    counters = ("log_stats_t", "train_steps")
    independent = False

    def __init__(self, mac, scheme, logger, args):
        require_policy_actor(self, mac)
        self.mac, self.logger, self.args = mac, logger, args
        self.n_agents, self.n_actions = args.n_agents, args.n_actions
        self.alpha, self.gamma = float(args.misodice_alpha), float(args.gamma)
        if args.schedule not in ("sequential", "joint"):
            raise ValueError(f"schedule must be 'sequential' or 'joint', not '{args.schedule}'")
        policy_from = args.disc_steps + args.nu_steps  # the sequential schedule's first policy update
        if args.schedule == "sequential" and not args.evaluate and args.offline_steps <= policy_from:
            # allowed (a run in parts resumes into the policy stage), but its policy is the untrained one
            console = getattr(logger, "console_logger", None) or logging.getLogger("pymarl")
            console.warning(f"offline_steps={args.offline_steps} ends before the policy stage, which starts after "
                            f"disc_steps={args.disc_steps} + nu_steps={args.nu_steps} = {policy_from} steps: this "
                            f"run's policy is not trained (its evaluations are of the initial policy). Resume with "
                            f"offline_steps > {policy_from}, or lower disc_steps / nu_steps")
        if args.disc_mix not in ("logits", "probs"):
            raise ValueError(f"disc_mix must be 'logits' or 'probs', not '{args.disc_mix}'")
        if args.disc_gp_inputs not in ("all", "obs"):
            raise ValueError(f"disc_gp_inputs must be 'all' or 'obs', not '{args.disc_gp_inputs}'")
        if args.time_limit_end not in ("bootstrap", "terminal"):
            raise ValueError(f"time_limit_end must be 'bootstrap' or 'terminal', not '{args.time_limit_end}'")
        if args.nu_loss not in ("exp", "logsumexp"):
            raise ValueError(f"nu_loss must be 'exp' or 'logsumexp', not '{args.nu_loss}'")
        if args.weight_pooling not in ("transition", "episode"):
            raise ValueError(f"weight_pooling must be 'transition' or 'episode', not '{args.weight_pooling}'")
        obs_dim = scheme["obs"]["vshape"]
        obs_dim = obs_dim if isinstance(obs_dim, int) else obs_dim[0]
        self.norm = Normaliser(obs_dim, int(args.state_shape), enabled=args.obs_normalise)
        nu_in = obs_dim + self.n_agents
        self.disc = make_agent_critic(args, nu_in + self.n_actions, 1)
        self.nu = make_agent_critic(args, nu_in, 1)
        if not args.last_layer_bias:
            drop_last_bias(self.disc)
            drop_last_bias(self.nu)
        # absorbing state after true terminals: its logit trains with the discriminator, its value with nu
        self.absorbing = None if not args.absorbing else \
            Absorbing(self.n_agents if self.independent else 1, args.ratio_clip, args.ratio_clip / (1 - self.gamma))
        self.disc_mixer = None if self.independent else self._mixer(args.disc_mixer, "disc_mixer")
        self.nu_mixer = None if self.independent else self._mixer(args.mixer, "mixer")
        self.target_nu = self.target_nu_mixer = None
        if args.nu_target:
            self.target_nu = copy.deepcopy(self.nu).requires_grad_(False)
            self.target_nu_mixer = copy.deepcopy(self.nu_mixer)
            if self.target_nu_mixer is not None:
                self.target_nu_mixer.requires_grad_(False)
        critic_lr = args.critic_lr or args.lr
        self.groups = {}
        absorbing = {} if self.absorbing is None else {"disc_loss": [self.absorbing.logit_raw],
                                                        "nu_loss": [self.absorbing.value_raw]}
        for name, modules, lr in (("disc_loss", [self.disc, self.disc_mixer], critic_lr),
                                  ("nu_loss", [self.nu, self.nu_mixer], critic_lr),
                                  ("actor_loss", [mac.agent], args.lr)):
            # (clipped params, optimiser): the absorbing scalars are optimised with their group but not clipped
            params = [p for m in modules if m is not None for p in m.parameters()]
            self.groups[name] = (params, make_optimizer(params + absorbing.get(name, []), args, lr=lr))
        self.targets = TargetUpdater(args.target_update_interval_or_tau)
        self.log_stats_t = -args.learner_log_interval - 1
        self.train_steps = 0
        self.guard = NonFiniteGuard(self, args, logger)
        if args.s0_source not in ("init_batch", "data_batch"):
            raise ValueError(f"s0_source must be 'init_batch' or 'data_batch', not '{args.s0_source}'")
        self.batches = self.batches | {"init"} if args.s0_source == "init_batch" else self.batches

    def _mixer(self, name, key):
        if name not in LINEAR_MIXERS:
            raise ValueError(f"{key} must be a non-negative linear mixer ({', '.join(LINEAR_MIXERS)}), not '{name}'")
        return mixer_REGISTRY[name](self.args)

    @property
    def device(self):
        return self.mac.device

    def fit_data(self, data):
        self.norm.fit(data)

    def stage(self):
        """The schedule's stage at the next update: 'joint', or one of STAGES (sequential, from train_steps)."""
        if self.args.schedule == "joint":
            return "joint"
        if self.train_steps < self.args.disc_steps:
            return "disc"
        return "nu" if self.train_steps < self.args.disc_steps + self.args.nu_steps else "actor"

    # ----- pieces -----
    def _nu_inputs(self, batch):
        """[B, T, n, O + n]: standardised observations and the one-hot agent id."""
        obs = self.norm.obs(batch["obs"].to(self.device))
        b, t = obs.shape[:2]
        ids = th.eye(self.n_agents, device=self.device).expand(b, t, -1, -1)
        return th.cat([obs, ids], dim=-1)

    def _disc_inputs(self, batch, nu_in):
        """[B, T-1, n, O + n + A]: the nu inputs of every transition and its action, one-hot."""
        actions = batch["actions"][:, :-1, :, 0].to(self.device)
        return th.cat([nu_in[:, :-1], F.one_hot(actions, self.n_actions).float()], dim=-1)

    def _mix(self, mixer, values, states):
        """[B, T, n] -> [B, T, 1] mixed (INDD: unchanged)."""
        if self.independent:
            return values
        w, b = mixer_weights(mixer, states, self.n_agents)
        return (w * values).sum(-1, keepdim=True) + b

    def _log_odds(self, c, states):
        """The mixed logit z of D (Eq. 13) from local logits c [B, T-1, n]."""
        if self.independent or self.args.disc_mix == "logits":
            return self._mix(self.disc_mixer, c, states)
        w, _ = mixer_weights(self.disc_mixer, states, self.n_agents)
        d = ((w / w.sum(-1, keepdim=True).clamp(min=1e-8)) * th.sigmoid(c)).sum(-1, keepdim=True)
        d = d.clamp(PROB_EPS, 1 - PROB_EPS)
        return th.log(d) - th.log1p(-d)

    def _disc_gp_gradients(self, rows_e, rows_u):
        """Input gradients of c at the penalty's interpolates. disc_gp_inputs=obs: only the observation part is
        interpolated and penalised, the one-hot action is one endpoint's (DemoDICE's penalty, written for continuous
        actions, otherwise holds |c(o, a) - c(o, a')| near |a - a'| = sqrt 2: the ratio between two actions in
        the same observation, which is what imitation needs, is capped near e^1.4 per agent)."""
        if self.args.disc_gp_inputs == "all":
            return input_gradients(self.disc, interpolates(rows_e, rows_u, self.args.gp_samples))
        x_gp = interpolates(rows_e, rows_u, self.args.gp_samples, discrete=self.n_actions)
        return input_gradients(self.disc, x_gp)[:, : -self.n_actions]

    def _states(self, batch):
        return self.norm.state(batch["state"].to(self.device))

    def _masks(self, batch):
        mask = transition_mask(batch).to(self.device)  # [B, T-1, 1]
        mask_n = mask.expand(-1, -1, self.n_agents)
        return (mask_n if self.independent else mask), mask_n

    def _nu_values(self, nu_net, mixer, nu_in, states, rows=None):
        """[B, T, k] mixed values; rows [B, T, n]: the steps whose value is used (None: all)."""
        values = unroll(nu_net, nu_in) if rows is None else unroll_rows(nu_net, nu_in, rows)
        return self._mix(mixer, values.squeeze(3), states)

    @staticmethod
    def _value_rows(mask_n):
        """[B, T, n] steps whose nu is used: the state of every real transition and its next state, and every
        episode's first state (E_s0[nu] averages it over the whole batch)."""
        pad = th.zeros_like(mask_n[:, :1])
        rows = (th.cat([mask_n, pad], 1) > 0) | (th.cat([pad, mask_n], 1) > 0)
        rows[:, 0] = True
        return rows

    def advantage(self, data, r, nu_s, nu_next):
        """A = r + gamma nu_tot(s') - nu_tot(s) [B, T-1, k]: after a true terminal s' is the absorbing state (its value
        nu_abs; 0 with absorbing off: no bootstrap), a time-limit end bootstraps from its stored s'
        (time_limit_end: terminal: as a true terminal); padded steps are masked by the callers. nu_abs has
        no target copy: with nu_target the terminal bootstrap is the online one."""
        terminated = self._ends(data)
        after = (1 - terminated) * nu_next
        if self.absorbing is not None:
            after = after + terminated * self.absorbing.value
        return r + self.gamma * after - nu_s

    def absorbing_advantage(self):
        """[k] A of the absorbing state's self-loop: r_abs + gamma nu_abs - nu_abs (r_abs: its logit, detached)."""
        r = self.absorbing.logit.detach().clamp(-self.args.ratio_clip, self.args.ratio_clip)
        return r - (1 - self.gamma) * self.absorbing.value

    def _with_absorbing(self, x, mask, x_abs, batch):
        """x [B, T-1, k] and its mask with each terminated episode's absorbing row appended (absorbing off: as is)."""
        if self.absorbing is None:
            return x, mask
        return append_absorbing(x, mask, x_abs, absorbing_rows(self._ends(batch), mask, self.args.episode_limit))

    def _ends(self, batch):
        """[B, T-1, 1] transitions after which nothing is bootstrapped: true terminals, and with
        time_limit_end=terminal also time-limit ends (to the absorbing state, or to 0 with absorbing off)."""
        ends = batch["terminated"][:, :-1].float()
        if self.args.time_limit_end == "terminal":
            ends = th.maximum(ends, batch["truncated"][:, :-1].float())
        return ends.to(self.device)

    # ----- losses -----
    def losses(self, data, expert, stage, init=None):
        """({group: loss} for the groups trained at `stage`, stats). init: a one-step batch of D_U initial states
        for E_s0 (None: the data batch's t = 0 rows)."""
        train_disc, train_nu, train_actor = (stage in ("joint", s) for s in STAGES)
        mask, mask_n = self._masks(data)
        nu_in, states = self._nu_inputs(data), self._states(data)
        x_u = self._disc_inputs(data, nu_in)
        losses, stats = {}, {}
        with th.set_grad_enabled(train_disc):
            c_u = unroll_rows(self.disc, x_u, mask_n > 0).squeeze(3)
            z_u = self._log_odds(c_u, states[:, :-1])
        if train_disc:
            mask_e, mask_e_n = self._masks(expert)
            x_e = self._disc_inputs(expert, self._nu_inputs(expert))
            z_e = self._log_odds(unroll_rows(self.disc, x_e, mask_e_n > 0).squeeze(3), self._states(expert)[:, :-1])
            c_abs = self.absorbing.logit if self.absorbing is not None else th.zeros(1)  # (unused when off)
            bce = masked_mean(*self._with_absorbing(F.softplus(-z_e), mask_e, F.softplus(-c_abs), expert)) \
                + masked_mean(*self._with_absorbing(F.softplus(z_u), mask, F.softplus(c_abs), data))
            rows_e, rows_u = x_e[mask_e_n > 0], x_u[mask_n > 0]
            grads = self._disc_gp_gradients(rows_e, rows_u)
            disc_gp = (grads.norm(dim=-1) - 1).pow(2).mean()
            losses["disc_loss"] = bce + self.args.disc_grad_penalty * disc_gp
            with th.no_grad():
                if self.absorbing is not None:
                    stats["absorbing_logit"] = self.absorbing.logit.mean()
                stats.update(disc_bce=bce, disc_gp=disc_gp, r_expert_mean=masked_mean(z_e, mask_e))
        if not (train_nu or train_actor):
            return losses, stats
        r = z_u.detach().clamp(-self.args.ratio_clip, self.args.ratio_clip)
        value_rows = self._value_rows(mask_n)
        with th.set_grad_enabled(train_nu):
            nu_tot = self._nu_values(self.nu, self.nu_mixer, nu_in, states, value_rows)
        if self.target_nu is not None:
            with th.no_grad():
                nu_next = self._nu_values(self.target_nu, self.target_nu_mixer, nu_in, states, value_rows)[:, 1:]
        else:
            nu_next = nu_tot[:, 1:]
        adv = self.advantage(data, r, nu_tot[:, :-1], nu_next)
        if train_nu:
            nu_s0 = nu_tot[:, 0] if init is None else \
                self._nu_values(self.nu, self.nu_mixer, self._nu_inputs(init), self._states(init))[:, 0]
            adv_abs = self.absorbing_advantage() if self.absorbing is not None else None
            adv_x, mask_x = self._with_absorbing(adv, mask, adv_abs, data)
            objective = nu_objective(adv_x, nu_s0, mask_x, self.alpha, self.gamma, self.args.nu_loss,
                                     self.args.exp_clip)
            nu_rows = x_u[mask_n > 0][:, : nu_in.shape[-1]]
            nu_gp = input_gradients(self.nu, interpolates(nu_rows, nu_rows, self.args.gp_samples)).pow(2).sum(-1)
            losses["nu_loss"] = objective.mean() + self.args.nu_grad_penalty * nu_gp.mean()
            stats.update(nu_gp=nu_gp.mean().detach(), nu_s0_mean=nu_s0.mean().detach())
        w = dice_weights(adv.detach(), mask, self.alpha, self.args.weight_normalise, self.args.exp_clip,
                         self.args.weight_max, self.args.weight_pooling)
        if train_actor:
            actions = data["actions"][:, :-1].to(self.device)
            log_pi = log_policy(self.mac, data)[:, :-1].gather(3, actions).squeeze(3)  # [B, T-1, n]
            losses["actor_loss"] = -masked_mean(w * log_pi, mask_n)
            stats["log_pi_taken_mean"] = masked_mean(log_pi.detach(), mask_n)
        with th.no_grad():
            stats.update(weight_stats(w, mask), r_union_mean=masked_mean(r, mask),
                         adv_mean=masked_means(adv, mask).mean(), adv_rms=masked_means(adv.pow(2), mask).mean().sqrt(),
                         nu_tot_mean=masked_mean(nu_tot[:, :-1], mask))
            stats.update(self._mixer_stats(states[:, :-1], mask))
            if self.absorbing is not None:
                stats.update(absorbing_logit=self.absorbing.logit.mean(), absorbing_value=self.absorbing.value.mean())
        return losses, stats

    def upgrade_state(self, name, state, path):
        """Checkpoints from before the absorbing state had it off; resuming must keep it as it was (its parameters
        are in the critics and in the optimisers' state)."""
        if name == "critics":
            saved_on = state.setdefault("absorbing", None) is not None
            if saved_on != (self.absorbing is not None):
                raise CheckpointError(f"{path} was trained with absorbing={saved_on} (older checkpoints: False); "
                                      f"resume it with absorbing={saved_on}")
        return state

    @th.no_grad()
    def _batch_advantages(self, batch):
        """(A [B, T-1, k], mask, r [B, T-1, k]) of a batch's transitions, from the current networks (no grad)."""
        mask, mask_n = self._masks(batch)
        nu_in, states = self._nu_inputs(batch), self._states(batch)
        r = self._batch_log_odds(batch, nu_in).clamp(-self.args.ratio_clip, self.args.ratio_clip)
        rows = self._value_rows(mask_n)
        nu_tot = self._nu_values(self.nu, self.nu_mixer, nu_in, states, rows)
        nu_next = nu_tot[:, 1:] if self.target_nu is None else \
            self._nu_values(self.target_nu, self.target_nu_mixer, nu_in, states, rows)[:, 1:]
        return self.advantage(batch, r, nu_tot[:, :-1], nu_next), mask, r

    @th.no_grad()
    def expert_weight_mean(self, data, expert):
        """[k] the mean BC weight the union batch's weighting gives D_E's transitions (logged as w_expert_mean; the
        union's own mean is 1 when normalised). It shows whether the weights find the expert data: 1 = no
        preference; a perfect split gives 1 / (D_E's share of D_U's transitions): ~16 on LBF's mix_200e_1000p, whose
        200 expert episodes hold 6.4% of the transitions (weight_max 20 caps it)."""
        (a_u, mask_u, _), (a_e, mask_e, _) = self._batch_advantages(data), self._batch_advantages(expert)
        x_u, x_e = a_u / (1 + self.alpha) - 1, a_e / (1 + self.alpha) - 1
        if self.args.weight_normalise:
            w = th.exp(x_e - masked_logmeanexp(x_u, mask_u))
        else:
            w = th.exp(x_e.clamp(max=self.args.exp_clip))
        if self.args.weight_max is not None:
            w = w.clamp(max=float(self.args.weight_max))
        return masked_means(w, mask_e)

    @th.no_grad()
    def dataset_weights(self, dataset, chunk=256):
        """{w, r, mask} numpy [E, T-1, k] (mask [E, T-1, k]): the BC weight and the clipped log-ratio reward of every
        transition of a whole dataset (D_U) from the current networks, the weights on the scale the training batches
        see them (normalised: divided by the mean over all of D_U's real transitions, then clipped at weight_max;
        else as dice_weights). scripts/dice_weights.py reports where they go."""
        parts = []
        for start in range(0, len(dataset), chunk):
            batch = dataset.episode_batch(np.arange(start, min(len(dataset), start + chunk)), device=self.device)
            parts.append([x.cpu() for x in self._batch_advantages(batch)])
        adv, mask, r = (th.cat(x) for x in zip(*parts))
        w = dice_weights(adv, mask, self.alpha, self.args.weight_normalise, self.args.exp_clip, self.args.weight_max,
                         self.args.weight_pooling)
        return {"w": w.numpy(), "r": r.numpy(), "mask": mask.expand_as(w).numpy()}

    @th.no_grad()
    def disc_separation(self, data, expert):
        """{disc_acc, disc_auc}: how well the current discriminator's log-odds tell this step's D_E batch from its
        D_U batch (real transitions; logged in every stage, so the value the weights were computed from is seen
        after the discriminator stage too). INDD: pooled over agents."""
        z = []
        for batch in (expert, data):
            logits, mask = self._batch_log_odds(batch), self._masks(batch)[0]
            z.append(logits[mask.expand_as(logits) > 0])
        acc, auc = separation(*z)
        return {"disc_acc": acc, "disc_auc": auc}

    def _batch_log_odds(self, batch, nu_in=None):
        """[B, T-1, k] the current discriminator's mixed log-odds of a batch's transitions (the caller sets grad)."""
        nu_in = self._nu_inputs(batch) if nu_in is None else nu_in
        c = unroll_rows(self.disc, self._disc_inputs(batch, nu_in), self._masks(batch)[1] > 0).squeeze(3)
        return self._log_odds(c, self._states(batch)[:, :-1])

    def _mixer_stats(self, states, mask):
        out = {}
        for key, mixer in (("disc_mixer", self.disc_mixer), ("nu_mixer", self.nu_mixer)):
            if mixer is not None:
                w, b = mixer_weights(mixer, states, self.n_agents)
                out[f"{key}_w_mean"], out[f"{key}_b_mean"] = masked_mean(w, mask.expand_as(w)), masked_mean(b, mask)
        return out

    # ----- training -----
    def train(self, batches, t_env, episode_num):
        data, expert = batches["data"], batches.get("expert")
        if expert is None:
            raise ValueError(f"{type(self).__name__} needs expert data D_E: set offline_expert (run: offline)")
        check_actions_available(data, transition_mask(data).expand(-1, -1, self.n_agents))
        stage = self.stage()
        losses, stats = self.losses(data, expert, stage, batches.get("init"))
        groups = {name: self.groups[name] for name in losses}
        for _, opt in groups.values():
            opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        norms = {f"{name.removesuffix('_loss')}_grad_norm": th.nn.utils.clip_grad_norm_(params,
                                                                                         self.args.grad_norm_clip)
                 for name, (params, _) in groups.items()}
        if self.absorbing is not None:  # not clipped, but seen by the non-finite guard and the logs
            grads = [p.grad for p in self.absorbing.parameters() if p.grad is not None]
            if grads:
                norms["absorbing_grad_norm"] = th.linalg.vector_norm(th.stack([g.norm() for g in grads]))
        optimisers = [opt for _, opt in groups.values()]
        out = {k: v.item() for k, v in losses.items()}
        if not self.guard.ok({**losses, **norms}, t_env, optimisers):
            return out
        for opt in optimisers:
            opt.step()
        if self.target_nu is not None and "nu_loss" in losses:
            pairs = [(self.target_nu, self.nu)]
            if self.target_nu_mixer is not None:
                pairs.append((self.target_nu_mixer, self.nu_mixer))
            self.targets.step(pairs)
        self.train_steps += 1
        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            stats["schedule_stage"] = -1 if stage == "joint" else STAGES.index(stage)
            stats.update(self.disc_separation(data, expert))  # networks after this step
            if stage != "disc":  # once nu trains, the weights mean something
                stats["w_expert_mean"] = self.expert_weight_mean(data, expert).mean()
            for key, value in {**out, **stats, **norms}.items():
                self.logger.log_stat(key, float(value.detach()) if th.is_tensor(value) else float(value), t_env)
            self.log_stats_t = t_env
        return out

    def state_parts(self):
        return {"critics": {"disc": self.disc, "nu": self.nu, "disc_mixer": self.disc_mixer,
                            "nu_mixer": self.nu_mixer, "normaliser": self.norm, "absorbing": self.absorbing},
                "target_critics": {"nu": self.target_nu, "nu_mixer": self.target_nu_mixer},
                "opt": {name: opt for name, (_, opt) in self.groups.items()},
                "learner": {"targets": self.targets}}


class INDDLearner(MisoDICELearner):
    """Individual DemoDICE (MisoDICE appendix B.3.3): each agent's own discriminator logit, reward, nu_i and
    weight w_i on (o_i, a_i); no mixers."""

    independent = True
