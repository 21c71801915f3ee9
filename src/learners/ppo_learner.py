"""PPO for multi-agent policies: IPPO (`critic_type: ac_critic`), MAPPO (`cv_critic`), and A2C as the
special case of one full-batch epoch (the ratio is then exactly 1, so the clipped loss has the A2C gradient).

Options (args keys; defaults in config/algs/ippo.yaml):
  epochs (4)                  passes over each batch
  num_mini_batches (1)        minibatches of whole episodes per epoch (1 = full batch)
  eps_clip (0.2)              ratio clipping; also the value-clipping range
  entropy_coef (0.01)         entropy bonus weight
  use_gae (True)              GAE(gae_lambda); False = one-step TD advantages r + γV' − V
  gae_lambda (0.95)
  critic_type ("ac_critic")   see modules/critics
  critic_lr (None = lr)       the critic has its own optimiser
  critic_coef (1.0)           weight of the critic loss (with Adam it matters only against grad_norm_clip)
  use_value_norm (False)      critic predicts returns normalised by running statistics
  value_clip (False)          PPO value clipping around the pre-update predictions
  normalise_advantages (True) per-batch masked standardisation of advantages
  standardise_rewards (False) running standardisation of the reward (per agent when rewards are per-agent)

Rewards: the team reward [B, T, 1] (shared by all agents) or per-agent rewards [B, T, n] (common_reward=False or a
per-agent shaper; each agent's advantages then come from its own reward). The critics take the agent id (shared
weights) or are one network per agent, so they fit a value per agent either way.
"""
import torch as th
import torch.nn.functional as F

from components.action_selectors import UNAVAILABLE_Q
from components.running_stats import RunningMeanStd
from learners.base import Learner
from learners.common import NonFiniteGuard, load_state, make_optimizer, masked_mean, transition_mask
from modules.critics import make_critic
from modules.critics.mlp import vdim
from modules.parallel_mlp import ParallelMLP
from utils.rl_utils import build_gae_targets

LOG_KEYS = ("pg_loss", "critic_loss", "entropy", "agent_grad_norm", "critic_grad_norm", "pi_max",
            "approx_kl", "clip_fraction")


class PPOLearner(Learner):
    on_policy = True
    per_agent_rewards = True
    agent_output_type = "pi_logits"
    counters = ("train_steps", "log_stats_t")

    def __init__(self, mac, scheme, logger, args):
        self.args = args
        self.mac = mac
        self.logger = logger
        self.n_agents = args.n_agents
        self.epochs = int(args.epochs)
        self.num_mini_batches = int(args.num_mini_batches)
        self.eps_clip = args.eps_clip
        self.entropy_coef = args.entropy_coef
        self.critic_coef = args.critic_coef
        self.gae_lambda = args.gae_lambda if args.use_gae else 0.0  # λ=0: TD(0)
        self.value_clip = args.value_clip
        self.normalise_advantages = args.normalise_advantages

        self.critic = make_critic(args, scheme)
        self.agent_params = list(mac.parameters())
        self.critic_params = list(self.critic.parameters())
        self.agent_optimiser = make_optimizer(self.agent_params, args)
        self.critic_optimiser = make_optimizer(self.critic_params, args, lr=args.critic_lr or args.lr)
        self.value_norm = RunningMeanStd() if args.use_value_norm else None
        # per-agent rewards keep one running mean/std per agent (their scales may differ, e.g. roles)
        n_rewards = vdim(scheme, "reward")
        self.reward_stats = (RunningMeanStd(() if n_rewards == 1 else (n_rewards,))
                             if args.standardise_rewards else None)
        self.train_steps = 0
        self.log_stats_t = -args.learner_log_interval - 1
        self.guard = NonFiniteGuard(self, args, logger)

    # ----- training -----
    def train(self, batch, t_env, episode_num):
        n = self.n_agents
        rewards = batch["reward"][:, :-1].float()
        mask = transition_mask(batch)
        if self.reward_stats is not None:
            self.reward_stats.update(rewards, mask)
            rewards = self.reward_stats.normalize(rewards)
        # a team reward [B, T-1, 1] and episode ends are shared by all agents; per-agent rewards are [B, T-1, n]
        rewards, terminated, mask = (x.expand(-1, -1, n) for x in
                                     (rewards, batch["terminated"][:, :-1].float(), mask))
        actions = batch["actions"][:, :-1]

        with th.no_grad():
            old_log_pi = self._log_probs(batch, actions)[0]
            old_values = self.critic(batch).squeeze(-1)  # normalised when use_value_norm
            values = self.value_norm.denormalize(old_values) if self.value_norm is not None else old_values
            advantages, returns = build_gae_targets(rewards, terminated, mask, values, self.args.gamma,
                                                    self.gae_lambda)
            if self.value_norm is not None:
                self.value_norm.update(returns, mask)
                returns = self.value_norm.normalize(returns)
            adv_mean = masked_mean(advantages, mask)
            if self.normalise_advantages:
                adv_std = masked_mean((advantages - adv_mean).pow(2), mask).sqrt()
                advantages = (advantages - adv_mean) / (adv_std + 1e-8) * mask
            old_values = old_values[:, :-1]

        stats = {k: [] for k in LOG_KEYS}
        data = (actions, old_log_pi, advantages, returns, old_values, mask)
        for _ in range(self.epochs):
            for idx in self._minibatches(batch.batch_size, batch.device):
                mb = batch if idx is None else batch[idx]
                mb_data = data if idx is None else tuple(x[idx] for x in data)
                mb_stats = self._update(mb, *mb_data, t_env)
                if mb_stats is None:  # non-finite with on_nonfinite=skip_batch: the rest of this batch is skipped
                    return {}
                for k, v in mb_stats.items():
                    stats[k].append(v)
        self.train_steps += 1

        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            for k, v in stats.items():
                self.logger.log_stat(k, sum(v) / len(v), t_env)
            self.logger.log_stat("advantage_mean", adv_mean.item(), t_env)
            self.logger.log_stat("value_mean", masked_mean(values[:, :-1], mask).item(), t_env)
            self.log_stats_t = t_env
        return {k: v[-1] for k, v in stats.items()}

    def _minibatches(self, batch_size, device):
        k = max(1, min(self.num_mini_batches, batch_size))
        if k == 1:
            return [None]
        return th.randperm(batch_size).to(device).tensor_split(k)

    def _update(self, batch, actions, old_log_pi, advantages, returns, old_values, mask, t_env):
        """One actor and one critic step; None when skipped for a non-finite value. Both are checked before
        either steps (the critic's loss does not depend on the actor's parameters)."""
        log_pi, entropy, pi_max = self._log_probs(batch, actions)
        # masked steps are zeroed before exp: their log-probs may be meaningless (e.g. -1e10 for padding)
        log_ratio = (log_pi - old_log_pi) * mask
        ratio = log_ratio.exp()
        surr = th.min(ratio * advantages, ratio.clamp(1 - self.eps_clip, 1 + self.eps_clip) * advantages)
        pg_loss = -masked_mean(surr, mask)
        mean_entropy = masked_mean(entropy, mask)
        self.agent_optimiser.zero_grad(set_to_none=True)
        (pg_loss - self.entropy_coef * mean_entropy).backward()
        agent_grad_norm = th.nn.utils.clip_grad_norm_(self.agent_params, self.args.grad_norm_clip)

        v = self.critic(batch)[:, :-1].squeeze(-1)
        err = (v - returns).pow(2)
        if self.value_clip:
            v_clipped = old_values + (v - old_values).clamp(-self.eps_clip, self.eps_clip)
            err = th.max(err, (v_clipped - returns).pow(2))
        critic_loss = masked_mean(err, mask)
        self.critic_optimiser.zero_grad(set_to_none=True)
        (self.critic_coef * critic_loss).backward()
        critic_grad_norm = th.nn.utils.clip_grad_norm_(self.critic_params, self.args.grad_norm_clip)
        optimisers = [self.agent_optimiser, self.critic_optimiser]
        if not self.guard.ok({"pg_loss": pg_loss, "agent_grad_norm": agent_grad_norm, "critic_loss": critic_loss,
                              "critic_grad_norm": critic_grad_norm}, t_env, optimisers):
            return None
        for optimiser in optimisers:
            optimiser.step()

        with th.no_grad():
            return {
                "pg_loss": pg_loss.item(),
                "critic_loss": critic_loss.item(),
                "entropy": mean_entropy.item(),
                "agent_grad_norm": agent_grad_norm.item(),
                "critic_grad_norm": critic_grad_norm.item(),
                "pi_max": masked_mean(pi_max, mask).item(),
                "approx_kl": masked_mean(ratio - 1 - log_ratio, mask).item(),
                "clip_fraction": masked_mean(((ratio - 1).abs() > self.eps_clip).float(), mask).item(),
            }

    def _log_probs(self, batch, actions):
        """log π(a_t), entropy and max probability per agent, each [B, T-1, n]."""
        logits = self.mac.unroll(batch, logits=True)[:, :-1]
        # mask here too, so training matches the sampling distribution even with mask_before_softmax False
        avail = batch["avail_actions"][:, :-1].to(logits.device)
        log_p = F.log_softmax(logits.masked_fill(avail == 0, UNAVAILABLE_Q), dim=-1)
        p = log_p.exp()
        entropy = -th.where(p > 0, p * log_p, th.zeros_like(p)).sum(-1)
        return log_p.gather(-1, actions.to(logits.device)).squeeze(-1), entropy, p.max(-1).values

    def state_parts(self):
        return {"critic": self.critic, "agent_opt": self.agent_optimiser, "critic_opt": self.critic_optimiser,
                "learner": {"value_norm": self.value_norm, "reward_stats": self.reward_stats}}

    def upgrade_state(self, name, state, path):
        # A non-shared critic written before issue 11 was an AgentwiseMLP: ParallelMLP loads its weights, and here
        # the critic optimiser's per-parameter state (saved in AgentwiseMLP's parameter order) is put in ParallelMLP's.
        if name != "critic_opt" or not isinstance(self.critic.net, ParallelMLP):
            return state
        if "net.fc1.weight" not in load_state(path, "critic"):
            return state
        order = self.critic.net.agentwise_order()
        return {k: [v[i].reshape(p.shape) for i, p in zip(order, self.critic_params, strict=True)]
                if isinstance(v, list) else v for k, v in state.items()}
