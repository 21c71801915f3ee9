"""Pieces shared by the learners: optimisers, target updates, masked losses, non-finite checks, checkpoint files."""
import logging
import math
import os

import torch as th
import torch.nn.functional as F

from components.action_selectors import UNAVAILABLE_Q
from components.optim import Adam, RMSprop
from utils.checkpoint import load_file
from utils.config import CHOICES


def make_optimizer(params, args, lr=None):
    lr = args.lr if lr is None else lr
    if args.optimizer == "adam":
        return Adam(params, lr=lr)
    if args.optimizer == "rmsprop":
        return RMSprop(params, lr=lr, alpha=args.optim_alpha, eps=args.optim_eps)
    raise ValueError(f"optimizer must be one of {', '.join(CHOICES['optimizer'])}, not '{args.optimizer}'")


class TargetUpdater:
    """`target_update_interval_or_tau` > 1: hard copy every that many learner updates; <= 1: Polyak with tau."""

    def __init__(self, interval_or_tau):
        self.interval_or_tau = interval_or_tau
        self.updates = 0
        self.last_hard_update = 0

    def step(self, pairs):
        """pairs: (target_module, online_module) tuples; called once per learner update."""
        self.updates += 1
        if self.interval_or_tau <= 1.0:
            tau = self.interval_or_tau
            with th.no_grad():
                for target, online in pairs:
                    for tp, p in zip(target.parameters(), online.parameters()):
                        tp.lerp_(p, tau)
        elif self.updates - self.last_hard_update >= self.interval_or_tau:
            for target, online in pairs:
                target.load_state_dict(online.state_dict())
            self.last_hard_update = self.updates

    def state_dict(self):
        return {"updates": self.updates, "last_hard_update": self.last_hard_update}

    def load_state_dict(self, state):
        self.updates, self.last_hard_update = state["updates"], state["last_hard_update"]

    def to(self, device):  # a learner part like the networks it updates; it holds no tensors
        return self


NONFINITE_MODES = CHOICES["on_nonfinite"]


class NonFiniteError(RuntimeError):
    """A loss or gradient norm became NaN/inf. The run loop fills in `checkpoint` (the last good one it saved),
    which the learner cannot know."""
    repeats_on_retry = True  # exact resume replays the same updates from the last checkpoint

    def __init__(self, learner, stats, step, step_name, what="stopped before the optimiser step"):
        self.learner, self.stats, self.step, self.step_name, self.what = learner, stats, step, step_name, what
        self.checkpoint = None
        self.causes = None  # the run loop's likely causes (offline: the data's magnitudes, the run's settings)
        super().__init__(learner, stats, step, step_name)

    def __str__(self):
        bad = ", ".join(f"{k} = {v}" for k, v in self.stats.items())
        msg = (f"{self.learner}: non-finite {bad} at {self.step_name} {self.step}; {self.what} (on_nonfinite=stop; "
               f"on_nonfinite=skip_batch would skip such updates, which helps only when a few batches are bad)")
        return (msg + (f". Look for the cause: {self.causes}" if self.causes else "")
                + (f". {self.checkpoint}" if self.checkpoint else ""))


class UpdatesSkippedError(RuntimeError):
    """Every update of a run was skipped for a non-finite value (on_nonfinite=skip_batch): it trained nothing."""
    repeats_on_retry = True  # the same data and settings skip the same updates


class NonFiniteGuard:
    """Checks a learner's losses and gradient norms before its optimiser steps (config `on_nonfinite`).

    `ok(values, step, optimisers)` is True when every value is finite (one stacked isfinite, one sync). Else
    with `stop` it raises NonFiniteError; with `skip_batch` it clears the optimisers' gradients, warns,
    logs the running count as `nonfinite_skips` and returns False: the caller then skips its update."""

    def __init__(self, learner, args, logger):
        self.mode = args.on_nonfinite
        if self.mode not in NONFINITE_MODES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(NONFINITE_MODES)}, not '{self.mode}'")
        self.learner = f"{type(learner).__name__} ({args.name})"
        # offline runs pass the gradient step as t_env
        self.step_name = "gradient step" if args.run == "offline" else "t_env"
        self.logger = logger
        self.skips = 0

    def ok(self, values, step, optimisers=()):
        stacked = th.stack([v.detach().reshape(()).float() for v in values.values()])
        if th.isfinite(stacked).all().item():
            return True
        bad = {k: v for k, v in zip(values, stacked.tolist()) if not math.isfinite(v)}
        if self.mode == "stop":
            raise NonFiniteError(self.learner, bad, step, self.step_name)
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        self.skips += 1
        stats = ", ".join(f"{k} = {v}" for k, v in bad.items())
        console = getattr(self.logger, "console_logger", None) or logging.getLogger("pymarl")
        console.warning(f"{self.learner}: non-finite {stats} at {self.step_name} {step}: update skipped "
                        f"(on_nonfinite=skip_batch; {self.skips} skipped so far)")
        self.logger.log_stat("nonfinite_skips", self.skips, step)
        return False


def transition_mask(batch):
    """[B, T-1, 1] mask of real transitions: step t is real iff a state was stored after it.

    pymarl's mask (filled, then zeroed after a terminal) also keeps the final-state row of an
    episode that was truncated before the batch's longest one, a transition that never happened.
    """
    return batch["filled"][:, 1:].float()


def require_policy_actor(learner, mac):
    """Offline actor learners imitate through log pi: the mac must output policy logits."""
    if mac.agent_output_type != "pi_logits":
        raise ValueError(f"{type(learner).__name__} needs a policy actor: agent_output_type: pi_logits "
                         f"(got '{mac.agent_output_type}')")


def log_policy(mac, batch):
    """[B, T, n, A] log pi of a policy mac from logits masked by avail_actions in log space, so unavailable actions
    have probability exactly 0 (masked here as well, in case mask_before_softmax is off). Never softmax
    probabilities fed to a cross-entropy."""
    logits = mac.unroll(batch, logits=True)
    avail = batch["avail_actions"][:, : logits.shape[1]].to(logits.device)
    return F.log_softmax(logits.masked_fill(avail == 0, UNAVAILABLE_Q), dim=-1)


def check_actions_available(batch, mask):
    """Offline data: a dataset action that its own avail_actions mark unavailable would get log pi = -1e10."""
    taken = th.gather(batch["avail_actions"][:, :-1], 3, batch["actions"][:, :-1]).squeeze(3)
    bad = (taken == 0) & (mask > 0)
    if bad.any():
        b, t, i = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"the dataset's action of agent {i} at step {t} (batch row {b}) is unavailable in its "
                         f"own avail_actions: the dataset is inconsistent (was it written for another env?)")


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def save_state(path, name, obj):
    th.save(obj, os.path.join(path, f"{name}.th"))


def load_state(path, name):
    """weights_only=True: a checkpoint holds tensors and plain values; errors name the file and the
    load_step that skips its checkpoint."""
    return load_file(os.path.join(path, f"{name}.th"))
