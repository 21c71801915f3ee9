"""OMIGA (Wang et al. 2023, "Offline Multi-Agent RL with Implicit Global-to-Local Value Regularization"),
discrete actions, following the official SMAC-branch losses (research notes offline.md §2.2).

Networks: the actor is the mac (pi_logits); per-agent Q_i(o_i, .) and V_i(o_i) are `critic_agent` networks on
the mac's inputs; one `lmix` mixer (state-dependent non-negative weights w(s), bias b(s)) mixes both Q and V.
Per update, with target copies (') of Q, V and the mixer:

    Q_tot  = sum_i w_i(s) Q_i(o_i, a_i) + b(s),   y = r + gamma (1 - terminated) [sum_i w'_i(s') V'_i(o'_i) + b'(s')]
    L_Q    = (Q_tot - y)^2                                               (trains Q and the mixer)
    z_i    = clamp(w'_i(s) (Q'_i(o_i, a_i) - V_i(o_i)) / alpha, -10, 10),  m = max(max z, -1) (detached)
    L_V    = exp(z_i - m) + exp(-m) w'_i(s) V_i(o_i) / alpha             (trains V)
    L_pi   = -exp(z_i).detach() log pi_i(a_i | o_i)                      (weighted BC; trains the actor)

Every mean runs over real transitions (and agents); `terminated` is a true terminal, so time-limit ends
bootstrap. Rewards are the per-step team rewards (the official loader's return-to-go rewards are not copied).
Options: omiga_alpha (10), mixer (lmix), mixing_embed_dim, critic_agent, critic_hidden_dim, critic_lr,
target_update_interval_or_tau (0.005), grad_norm_clip.
"""
import torch as th

from learners.common import log_policy, masked_mean, transition_mask
from learners.offline_ac import OfflineActorCritic, unroll
from modules.critics import make_agent_critic
from modules.mixers import REGISTRY as mixer_REGISTRY

Z_CLIP = 10.0  # official clamp of z; exp(10) bounds the BC weights


class OMIGALearner(OfflineActorCritic):
    reads_rewards = True  # the Q targets r + gamma V'

    def __init__(self, mac, scheme, logger, args):
        super().__init__(mac, scheme, logger, args)
        self.alpha = float(args.omiga_alpha)
        mixer_name = args.mixer
        if mixer_name not in mixer_REGISTRY:
            raise ValueError(f"unknown mixer '{mixer_name}'; valid: {sorted(mixer_REGISTRY)}")
        mixer = mixer_REGISTRY[mixer_name](args)
        if not hasattr(mixer, "weights"):
            raise ValueError(f"OMIGA needs a linear mixer with weights(states) (lmix), not '{mixer_name}'")
        q_net = make_agent_critic(args, mac.input_shape, self.n_actions)
        v_net = make_agent_critic(args, mac.input_shape, 1)
        critic_lr = args.critic_lr or args.lr
        self._setup({"q": q_net, "v": v_net, "mixer": mixer},
                    {"actor_loss": ([mac.agent], args.lr),
                     "q_loss": ([q_net, mixer], critic_lr),
                     "v_loss": ([v_net], critic_lr)})

    @th.no_grad()
    def bootstrap(self, batch, inputs):
        """[B,T-1,1] gamma (1 - terminated) V_tot'(s') from the target V and mixer."""
        w, b = self.target_critics["mixer"].weights(batch["state"][:, 1:].to(self.device))
        v_next = unroll(self.target_critics["v"], inputs)[:, 1:].squeeze(3)
        terminated = batch["terminated"][:, :-1].float().to(self.device)
        return self.args.gamma * (1 - terminated) * ((w * v_next).sum(-1, keepdim=True) + b)

    def td_targets(self, batch, inputs):
        """[B,T-1,1] y = r + gamma (1 - terminated) V_tot'(s')."""
        return batch["reward"][:, :-1].to(self.device) + self.bootstrap(batch, inputs)

    def q_tot(self, batch, inputs, actions):
        """(Q_tot [B,T-1,1], Q_i(o_i, a_i) [B,T-1,n], w [B,T-1,n], b [B,T-1,1]) from the online Q and mixer."""
        q_taken = unroll(self.critics["q"], inputs)[:, :-1].gather(3, actions).squeeze(3)
        w, b = self.critics["mixer"].weights(batch["state"][:, :-1].to(self.device))
        return (w * q_taken).sum(-1, keepdim=True) + b, q_taken, w, b

    def value_policy_losses(self, batch, inputs, actions, mask):
        """OMIGA's extreme-V loss and exp(z)-weighted BC (shared with O-MAPL): (v_loss, actor_loss, stats)."""
        mask_n = mask.expand(-1, -1, self.n_agents)
        v = unroll(self.critics["v"], inputs)[:, :-1].squeeze(3)
        with th.no_grad():
            w_t = self.target_critics["mixer"].weights(batch["state"][:, :-1].to(self.device))[0]
            q_t_taken = unroll(self.target_critics["q"], inputs)[:, :-1].gather(3, actions).squeeze(3)
        z = (w_t * (q_t_taken - v) / self.alpha).clamp(-Z_CLIP, Z_CLIP)
        z_max = z.detach().masked_fill(mask_n == 0, -Z_CLIP).max().clamp(min=-1.0)
        v_loss = masked_mean(th.exp(z - z_max) + th.exp(-z_max) * w_t * v / self.alpha, mask_n)

        bc_weight = th.exp(z.detach())
        log_pi_taken = log_policy(self.mac, batch)[:, :-1].gather(3, actions).squeeze(3)
        actor_loss = -masked_mean(bc_weight * log_pi_taken, mask_n)
        with th.no_grad():
            stats = {"v_mean": masked_mean(v, mask_n), "bc_weight_mean": masked_mean(bc_weight, mask_n),
                     "z_max": z_max, "log_pi_taken_mean": masked_mean(log_pi_taken, mask_n)}
        return v_loss, actor_loss, stats

    def losses(self, batch):
        dev = self.device
        mask = transition_mask(batch).to(dev)                                  # [B,T-1,1]
        mask_n = mask.expand(-1, -1, self.n_agents)
        actions = batch["actions"][:, :-1].to(dev)                             # [B,T-1,n,1]
        inputs = self.mac._build_inputs_seq(batch)                             # [B,T,n,I]
        q_tot, q_taken, w, b = self.q_tot(batch, inputs, actions)
        y = self.td_targets(batch, inputs)
        q_loss = masked_mean((q_tot - y).pow(2), mask)
        v_loss, actor_loss, stats = self.value_policy_losses(batch, inputs, actions, mask)
        with th.no_grad():
            stats.update({"q_taken_mean": masked_mean(q_taken, mask_n), "q_tot_mean": masked_mean(q_tot, mask),
                          "target_mean": masked_mean(y, mask), "mixer_w_mean": masked_mean(w, mask_n),
                          "mixer_b_mean": masked_mean(b, mask)})
        return {"actor_loss": actor_loss, "q_loss": q_loss, "v_loss": v_loss}, stats
