"""The base of the offline actor-critic learners (OMAR, OMIGA): optimiser groups, soft/hard target copies and
checkpoints. Their per-agent critics come from modules.critics.make_agent_critic (the online stack's networks, shared
across agents with the agent id in the inputs)."""
import copy

import torch as th

from learners.base import OfflineLearner
from learners.common import (
    NonFiniteGuard,
    TargetUpdater,
    check_actions_available,
    make_optimizer,
    require_policy_actor,
    transition_mask,
)


def unroll(net, inputs):
    """[B, T, n, I] -> [B, T, n, out] from a fresh hidden state (a recurrent critic sees the whole episode)."""
    return net.forward_seq(inputs, net.init_hidden(inputs.shape[0], inputs.shape[2]))[0]


def unroll_rows(net, inputs, rows):
    """unroll(net, inputs) [B, T, n, out] at the rows [B, T, n] that are True. A feed-forward net (recurrent = False)
    sees only those rows and gives 0 elsewhere, so padded steps cost nothing (on LBF a third of a union batch's rows
    and half of an expert batch's); a recurrent net needs the whole sequence. Callers mask the other rows."""
    if getattr(net, "recurrent", True):
        return unroll(net, inputs)
    picked = inputs[rows]
    out = net.forward_seq(picked[:, None, None, :], net.init_hidden(len(picked), 1))[0][:, 0, 0]
    full = out.new_zeros(*rows.shape, out.shape[-1])
    full[rows] = out
    return full


class OfflineActorCritic(OfflineLearner):
    """Subclasses call `_setup(critics, groups)` and implement `losses(batch) -> (losses, stats)`.

    critics: name -> module; each gets a target copy in `target_critics[name]`, updated after every step with
    `target_update_interval_or_tau` (<= 1: Polyak tau). groups: loss name -> (modules, lr); one optimiser
    (make_optimizer: Adam by default) per group, minimising `losses[name]`. The groups' parameters are disjoint and
    every loss reaches only its own group (targets and cross-terms are detached), so one backward of the sum
    gives each group exactly its own gradient; each group is clipped to grad_norm_clip on its own.
    """

    agent_output_type = "pi_logits"
    counters = ("log_stats_t", "train_steps")

    def __init__(self, mac, scheme, logger, args):
        require_policy_actor(self, mac)
        self.mac, self.logger, self.args = mac, logger, args
        self.n_agents, self.n_actions = args.n_agents, args.n_actions
        self.log_stats_t = -args.learner_log_interval - 1
        self.train_steps = 0
        self.guard = NonFiniteGuard(self, args, logger)

    def _setup(self, critics, groups):
        self.critics = critics
        self.target_critics = {name: copy.deepcopy(net) for name, net in critics.items()}
        for net in self.target_critics.values():
            net.requires_grad_(False)
        self.groups = {}
        for name, (modules, lr) in groups.items():
            params = [p for m in modules for p in m.parameters()]
            self.groups[name] = (params, make_optimizer(params, self.args, lr=lr))
        self.targets = TargetUpdater(self.args.target_update_interval_or_tau)

    @property
    def device(self):
        return self.mac.device

    def losses(self, batch):
        raise NotImplementedError

    def batch_losses(self, batches):
        """(losses, stats) of one update from the batches the learner declared (default: the "data" batch)."""
        batch = batches["data"]
        # a dataset action unavailable in its own avail_actions would get log pi = -1e10: say so instead
        check_actions_available(batch, transition_mask(batch).expand(-1, -1, self.n_agents))
        return self.losses(batch)

    def train(self, batches, t_env, episode_num):
        losses, stats = self.batch_losses(batches)
        for _, opt in self.groups.values():
            opt.zero_grad(set_to_none=True)
        sum(losses[name] for name in self.groups).backward()
        clip = self.args.grad_norm_clip
        norms = {f"{name.removesuffix('_loss')}_grad_norm": th.nn.utils.clip_grad_norm_(params, clip)
                 for name, (params, _) in self.groups.items()}
        stats.update(norms)
        optimisers = [opt for _, opt in self.groups.values()]
        if not self.guard.ok({**losses, **norms}, t_env, optimisers):  # every group is checked before any steps
            return {k: v.item() for k, v in losses.items()}
        for opt in optimisers:
            opt.step()
        self.targets.step([(self.target_critics[k], self.critics[k]) for k in self.critics])
        self.train_steps += 1
        out = {k: v.item() for k, v in losses.items()}
        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            for key, value in {**out, **stats}.items():
                self.logger.log_stat(key, float(value.detach()) if th.is_tensor(value) else float(value), t_env)
            self.log_stats_t = t_env
        return out

    @th.no_grad()
    def validation_loss(self, batch):
        losses, _ = self.losses(batch)
        return {f"valid_{k}": v.item() for k, v in losses.items()}

    def state_parts(self):
        return {"critics": self.critics, "target_critics": self.target_critics,
                "opt": {name: opt for name, (_, opt) in self.groups.items()}, "learner": {"targets": self.targets}}
