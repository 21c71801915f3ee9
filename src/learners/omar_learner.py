"""OMAR (Pan et al. 2022, "Plan Better Amid Conservatism: Offline MARL with Actor Rectification") for discrete
actions (research notes offline.md §3.3): independent per-agent actor-critics with twin critics, CQL, and an
actor that is pulled toward the best action under Q (with discrete actions the official zeroth-order search
becomes an exact argmax over the available actions).

Critics Q1_i, Q2_i(o_i, .) are two separate `critic_agent` networks on the mac's inputs (plus the global state
when omar_critic_state). With target critics (') and the current policy pi (detached):

    V'(o')  = sum_{a avail} pi(a | o') min(Q1', Q2')(o', a)    expected value under the current policy (no
                                                               target actor, as in SAC-discrete)
    y       = r + gamma (1 - terminated) V'(o')                team reward for every agent; TD(lambda) if td_lambda
    L_Q     = sum_k (Q_k(o, a) - y)^2 + cql_alpha (logsumexp_{a' avail} Q_k(o, a') - Q_k(o, a))
    a*      = argmax_{a' avail} Q1(o, a')
    L_pi    = omar_coe * CE(pi, a*) - (1 - omar_coe) * sum_{a avail} pi(a | o) Q1(o, a)

The actor uses Q1 from the same forward pass as the critic loss (detached; before this step's critic update).
Every mean runs over real transitions and agents; `terminated` is a true terminal, so time-limit ends bootstrap.
Options: cql_alpha, omar_coe, td_lambda (0), omar_critic_state, critic_agent, critic_hidden_dim, critic_lr,
target_update_interval_or_tau, grad_norm_clip.
"""
import torch as th

from components.action_selectors import UNAVAILABLE_Q
from learners.common import log_policy, masked_mean, transition_mask
from learners.offline_ac import OfflineActorCritic, unroll
from modules.critics import make_agent_critic
from utils.rl_utils import build_td_lambda_targets


def masked_logsumexp(q, avail):
    """logsumexp over the available actions only ([..., A] -> [...])."""
    return th.logsumexp(q.masked_fill(avail == 0, UNAVAILABLE_Q), dim=-1)


def masked_argmax(q, avail):
    """[..., A] -> [..., 1] index of the best available action."""
    return q.masked_fill(avail == 0, UNAVAILABLE_Q).argmax(dim=-1, keepdim=True)


def expected_value(pi, q, avail):
    """sum_a pi(a) q(a) over the available actions ([..., A] -> [...]); unavailable q never enters (pi is 0
    there, and q is zeroed so that a huge unavailable value cannot leak in as 0 * inf)."""
    return (pi * q.masked_fill(avail == 0, 0.0)).sum(dim=-1)


class OMARLearner(OfflineActorCritic):
    reads_rewards = True  # the critics' TD targets

    def __init__(self, mac, scheme, logger, args):
        super().__init__(mac, scheme, logger, args)
        self.cql_alpha = float(args.cql_alpha)
        self.omar_coe = float(args.omar_coe)
        self.td_lambda = float(args.td_lambda)
        self.critic_state = bool(args.omar_critic_state)
        in_dim = mac.input_shape + (int(args.state_shape) if self.critic_state else 0)
        q1 = make_agent_critic(args, in_dim, self.n_actions)
        q2 = make_agent_critic(args, in_dim, self.n_actions)  # its own weights: the twin must not share layers
        critic_lr = args.critic_lr or args.lr
        self._setup({"q1": q1, "q2": q2},
                    {"actor_loss": ([mac.agent], args.lr), "critic_loss": ([q1, q2], critic_lr)})

    def _critic_inputs(self, batch):
        inputs = self.mac._build_inputs_seq(batch)
        if self.critic_state:
            state = batch["state"].to(inputs.device).unsqueeze(2).expand(-1, -1, self.n_agents, -1)
            inputs = th.cat([inputs, state], dim=-1)
        return inputs

    @th.no_grad()
    def td_targets(self, batch, inputs, pi):
        """[B,T-1,n] y = r + gamma (1 - terminated) sum_a pi(a|o') min(Q1', Q2')(o', a) (or its TD(lambda))."""
        n, dev = self.n_agents, self.device
        q_next = th.min(unroll(self.target_critics["q1"], inputs), unroll(self.target_critics["q2"], inputs))
        v_next = expected_value(pi, q_next, batch["avail_actions"].to(dev))  # [B,T,n]; step 0 unused
        rewards = batch["reward"][:, :-1].to(dev).expand(-1, -1, n)
        terminated = batch["terminated"][:, :-1].float().to(dev).expand(-1, -1, n)
        mask = transition_mask(batch).to(dev).expand(-1, -1, n)
        return build_td_lambda_targets(rewards, terminated, mask, v_next, self.args.gamma, self.td_lambda)

    def losses(self, batch):
        n, dev = self.n_agents, self.device
        mask = transition_mask(batch).to(dev).expand(-1, -1, n)               # [B,T-1,n]
        actions = batch["actions"][:, :-1].to(dev)                            # [B,T-1,n,1]
        avail = batch["avail_actions"].to(dev)                                # [B,T,n,A]
        inputs = self._critic_inputs(batch)
        log_pi = log_policy(self.mac, batch)                                  # [B,T,n,A]
        pi = log_pi.exp()

        y = self.td_targets(batch, inputs, pi)

        q1_all, q2_all = (unroll(self.critics[k], inputs)[:, :-1] for k in ("q1", "q2"))  # [B,T-1,n,A]
        td_loss = cql_loss = 0.0
        for q_all in (q1_all, q2_all):
            q_taken = q_all.gather(3, actions).squeeze(3)
            td_loss = td_loss + masked_mean((q_taken - y).pow(2), mask)
            cql_loss = cql_loss + masked_mean(masked_logsumexp(q_all, avail[:, :-1]) - q_taken, mask)
        critic_loss = td_loss + self.cql_alpha * cql_loss

        q1 = q1_all.detach()
        best = masked_argmax(q1, avail[:, :-1])
        ce = -log_pi[:, :-1].gather(3, best).squeeze(3)
        pi_q = expected_value(pi[:, :-1], q1, avail[:, :-1])
        actor_loss = masked_mean(self.omar_coe * ce - (1 - self.omar_coe) * pi_q, mask)

        with th.no_grad():
            stats = {"td_loss": td_loss, "cql_loss": cql_loss,
                     "q1_taken_mean": masked_mean(q1.gather(3, actions).squeeze(3), mask),
                     "target_mean": masked_mean(y, mask), "pi_q_mean": masked_mean(pi_q, mask),
                     "ce_to_best": masked_mean(ce, mask),
                     "best_is_data_action": masked_mean((best == actions).float().squeeze(3), mask),
                     "entropy": masked_mean(-(pi * log_pi).sum(-1)[:, :-1], mask)}
        return {"actor_loss": actor_loss, "critic_loss": critic_loss}, stats
