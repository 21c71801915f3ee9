"""Behaviour cloning for offline MARL: BC, top-fraction BC (50%BC) and BC(β).

Every agent maximises log π_i(a_i | o_i) of the dataset's actions over real transitions, with π_i from the
actor's logits masked to the available actions (log-softmax of masked logits, never softmax probabilities
fed to a cross-entropy). The loss is the mean over agents and transitions, so the learning rate does not
depend on the number of agents. 50%BC is this learner on `offline_top_fraction: 0.5` (config/algs/bc50.yaml).

BC(β) (MisoDICE, appendix B.3.1): β · NLL on an expert batch from D_E + (1 − β) · NLL on a batch from the
union D_U; β = 1 imitates D_E only, β = 0 the whole union (plain BC).
"""
import torch as th

from learners.base import OfflineLearner
from learners.common import NonFiniteGuard, check_actions_available, log_policy, make_optimizer, transition_mask


class BCLearner(OfflineLearner):
    agent_output_type = "pi_logits"
    reads_rewards = False

    def __init__(self, mac, scheme, logger, args):
        if args.agent_output_type != "pi_logits":
            raise ValueError("bc_learner needs a policy actor: agent_output_type: pi_logits")
        self.args = args
        self.mac = mac
        self.logger = logger
        self.beta = float(args.bc_beta)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"bc_beta must be in [0, 1], got {self.beta}")
        self.batches = frozenset({"data", "expert"}) if self.beta > 0 else frozenset({"data"})
        self.params = list(mac.parameters())
        self.optimiser = make_optimizer(self.params, args)
        self.log_stats_t = -args.learner_log_interval - 1
        self.guard = NonFiniteGuard(self, args, logger)

    def nll(self, batch):
        """(mean negative log-likelihood over agents and real transitions, greedy-action accuracy)."""
        mask = transition_mask(batch).expand(-1, -1, self.args.n_agents)
        check_actions_available(batch, mask)
        log_pi = log_policy(self.mac, batch)[:, :-1]
        logp = th.gather(log_pi, 3, batch["actions"][:, :-1]).squeeze(3)
        n = mask.sum().clamp(min=1)
        loss = -(logp * mask).sum() / n
        with th.no_grad():
            hits = (log_pi.argmax(dim=-1) == batch["actions"][:, :-1].squeeze(3)).float()
            accuracy = (hits * mask).sum() / n
        return loss, accuracy

    def train(self, batches, t_env, episode_num):
        union_loss, accuracy = self.nll(batches["data"])
        loss = union_loss
        expert_loss = None
        if self.needs("expert"):
            if batches.get("expert") is None:
                raise ValueError("BC(β) with bc_beta > 0 needs expert data: set offline_expert (run: offline)")
            expert_loss, _ = self.nll(batches["expert"])
            loss = self.beta * expert_loss + (1.0 - self.beta) * union_loss
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(self.params, self.args.grad_norm_clip)
        if not self.guard.ok({"bc_loss": loss, "grad_norm": grad_norm}, t_env, [self.optimiser]):
            return {"loss": loss.item()}
        self.optimiser.step()

        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            self.logger.log_stat("bc_loss", loss.item(), t_env)
            self.logger.log_stat("bc_accuracy", accuracy.item(), t_env)
            self.logger.log_stat("grad_norm", grad_norm.item(), t_env)
            if expert_loss is not None:
                self.logger.log_stat("bc_expert_loss", expert_loss.item(), t_env)
                self.logger.log_stat("bc_union_loss", union_loss.item(), t_env)
            self.log_stats_t = t_env
        return {"loss": loss.item()}

    @th.no_grad()
    def validation_loss(self, batch):
        loss, accuracy = self.nll(batch)
        return {"valid_bc_loss": loss.item(), "valid_bc_accuracy": accuracy.item()}

    def state_parts(self):
        return {"opt": self.optimiser}
