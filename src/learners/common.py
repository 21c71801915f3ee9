"""Pieces shared by the learners: optimisers, target updates, masked losses, checkpoint files."""
import os

import torch as th
import torch.nn.functional as F

from components.action_selectors import UNAVAILABLE_Q
from components.optim import Adam, RMSprop


def make_optimizer(params, args, lr=None):
    lr = args.lr if lr is None else lr
    if args.optimizer == "adam":
        return Adam(params, lr=lr)
    if args.optimizer == "rmsprop":
        return RMSprop(params, lr=lr, alpha=args.optim_alpha, eps=args.optim_eps)
    raise ValueError(f"optimizer must be 'adam' or 'rmsprop', not '{args.optimizer}'")


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


def transition_mask(batch):
    """[B, T-1, 1] mask of real transitions: step t is real iff a state was stored after it.

    pymarl's mask (filled, then zeroed after a terminal) also keeps the final-state row of an
    episode that was truncated before the batch's longest one, a transition that never happened.
    """
    return batch["filled"][:, 1:].float()


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
    return th.load(os.path.join(path, f"{name}.th"), map_location="cpu", weights_only=False)
