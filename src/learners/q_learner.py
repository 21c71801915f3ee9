"""Value-based learner for IQL (no mixer), VDN, QMIX, QPLEX, Qatten and any registered mixer."""
import copy

import torch as th
import torch.nn.functional as F

from components.action_selectors import UNAVAILABLE_Q
from components.running_stats import RunningMeanStd
from learners.base import Learner
from learners.common import NonFiniteGuard, TargetUpdater, make_optimizer, masked_mean, transition_mask
from modules.mixers import BATCH_FIELDS as mixer_BATCH_FIELDS
from modules.mixers import REGISTRY as mixer_REGISTRY
from utils.rl_utils import build_td_lambda_targets


class QLearner(Learner):
    agent_output_type = "q"  # trains action values; pi_logits outputs would be softmax probabilities

    def __init__(self, mac, scheme, logger, args):
        self.args = args
        self.mac = mac
        self.logger = logger
        self.params = list(mac.parameters())
        self.mixer = self.target_mixer = None
        if args.mixer:
            if args.mixer not in mixer_REGISTRY:
                raise ValueError(f"unknown mixer '{args.mixer}'; valid: {sorted(mixer_REGISTRY)} (or null for IQL)")
            self.mixer = mixer_REGISTRY[args.mixer](args)
            self.params += list(self.mixer.parameters())
            self.target_mixer = copy.deepcopy(self.mixer)
        self.mixer_fields = mixer_BATCH_FIELDS.get(args.mixer or "", ())  # e.g. qllm: tfcaf_w, tfcaf_b
        self.optimiser = make_optimizer(self.params, args)
        self.target_mac = copy.deepcopy(mac)
        self.targets = TargetUpdater(args.target_update_interval_or_tau)
        self.reward_stats = RunningMeanStd() if args.standardise_rewards else None
        self.log_stats_t = -args.learner_log_interval - 1
        self.guard = NonFiniteGuard(self, args, logger)

    def train(self, batch, t_env, episode_num):
        rewards = batch["reward"][:, :-1]
        actions = batch["actions"][:, :-1]
        terminated = batch["terminated"][:, :-1].float()
        mask = transition_mask(batch)
        avail_actions = batch["avail_actions"]
        if self.reward_stats is not None:
            self.reward_stats.update(rewards, mask)
            rewards = (rewards - self.reward_stats.mean) / th.sqrt(self.reward_stats.var + 1e-8)

        mac_out = self.mac.unroll(batch)  # [B,T,n,A]
        chosen_qs = th.gather(mac_out[:, :-1], dim=3, index=actions).squeeze(3)
        masked_out = mac_out.detach().masked_fill(avail_actions == 0, UNAVAILABLE_Q)

        with th.no_grad():
            target_out = self.target_mac.unroll(batch).masked_fill(avail_actions == 0, UNAVAILABLE_Q)
            if self.args.double_q:
                best = masked_out.argmax(dim=3, keepdim=True)
                target_max = th.gather(target_out, 3, best).squeeze(3)
            else:
                target_max, best = target_out.max(dim=3, keepdim=True)
                target_max = target_max.squeeze(3)
            if self.mixer is not None:
                target_max = self._mix(
                    self.target_mixer, target_max, batch["state"],
                    actions_onehot=F.one_hot(best.squeeze(3), self.args.n_actions).float(),
                    max_qs=target_out.max(dim=3).values, obs=batch["obs"],
                    **{k: batch[k] for k in self.mixer_fields})
            if not self.mixer:
                # IQL: one TD target per agent
                rewards, terminated, mask = (x.expand(-1, -1, self.args.n_agents) for x in (rewards, terminated, mask))
            targets = build_td_lambda_targets(rewards, terminated, mask, target_max, self.args.gamma,
                                              self.args.td_lambda)

        if self.mixer is not None:
            chosen_qs = self._mix(self.mixer, chosen_qs, batch["state"][:, :-1],
                                  actions_onehot=batch["actions_onehot"][:, :-1],
                                  max_qs=masked_out[:, :-1].max(dim=3).values, obs=batch["obs"][:, :-1], mask=mask,
                                  **{k: batch[k][:, :-1] for k in self.mixer_fields})

        td_error = chosen_qs - targets
        loss = masked_mean(td_error.pow(2), mask)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(self.params, self.args.grad_norm_clip)
        if not self.guard.ok({"loss": loss, "grad_norm": grad_norm}, t_env, [self.optimiser]):
            return {"loss": loss.item()}
        self.optimiser.step()
        self.targets.step(self._target_pairs())

        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            n = mask.sum().clamp(min=1)
            with th.no_grad():
                self.logger.log_stat("loss", loss.item(), t_env)
                self.logger.log_stat("grad_norm", grad_norm.item(), t_env)
                self.logger.log_stat("td_error_abs", ((td_error.abs() * mask).sum() / n).item(), t_env)
                self.logger.log_stat("q_taken_mean", ((chosen_qs * mask).sum() / n).item(), t_env)
                self.logger.log_stat("target_mean", ((targets * mask).sum() / n).item(), t_env)
                if hasattr(self.mixer, "log_stats"):  # e.g. qllm: statistics of the TFCAF's weights
                    for key, value in self.mixer.log_stats().items():
                        self.logger.log_stat(f"mixer_{key}", value, t_env)
            self.log_stats_t = t_env
        return {"loss": loss.item()}

    def _mix(self, mixer, agent_qs, states, **extra):
        """Q_tot [B, T, 1]; a registered mixer of another shape is refused here, where its name is known (a [B, T]
        Q_tot would otherwise fail later as a bare size mismatch against the TD targets)."""
        q_tot = mixer(agent_qs, states, **extra)
        expected = (*agent_qs.shape[:2], 1)
        if tuple(q_tot.shape) != expected:
            raise ValueError(f"mixer '{self.args.mixer}' ({type(mixer).__name__}) returned Q_tot of shape "
                             f"{tuple(q_tot.shape)}; its forward must return [B, T, 1] = {expected}")
        return q_tot

    def _target_pairs(self):
        pairs = [(self.target_mac.agent, self.mac.agent)]
        if self.mixer is not None:
            pairs.append((self.target_mixer, self.mixer))
        return pairs

    def state_parts(self):
        return {"target_agent": self.target_mac, "mixer": self.mixer, "target_mixer": self.target_mixer,
                "opt": self.optimiser, "learner": {"targets": self.targets, "reward_stats": self.reward_stats}}
