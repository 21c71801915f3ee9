"""MARL-SL (MisoDICE B.3.4), step 1 of 2: a reward model learned from trajectory preferences by supervised learning;
step 2 is OMIGA on that reward (--config=omiga with offline_reward=label:<name>_reward_hat).

    r_t = r_psi(s_t, a_t, s_{t+1})                     (one team reward per transition: TransitionReward)
    L   = BCE_with_logits(sum_t r_t(sigma_1) - sum_t r_t(sigma_2), label)       (Bradley-Terry; ties: label 0.5)

over real transitions only. Bradley-Terry, not O-MAPL's SL-MARL regression of the mean reward onto 0/1: it is the
likelihood of the labels under the same preference model O-MAPL fits (so MARL-SL differs from O-MAPL only in
learning a reward instead of Q/V), a tie has its natural target, and a mean over steps would let episode length
change the target. The reward is a team reward because step 2 (OMIGA) trains on a team reward.

Two learners, not one doing both phases: step 2 is the existing OMIGA learner unchanged, and the reward label in the
dataset can be inspected, reused or swapped. At the end the run writes labels/<name>_reward_hat [E, T+1, 1] (row t =
the reward of transition t, zero on padding; <name> = marl_sl_label_name or the preference set's). The run's own
actor is not trained (`trains_actor` False): the run plays no test episodes; evaluate step 2's policy.
"""
import numpy as np
import torch as th
import torch.nn.functional as F

from learners.base import OfflineLearner
from learners.common import NonFiniteGuard, make_optimizer, masked_mean, transition_mask
from learners.episode_ranking import (
    RecoveredReturnError,
    check_new_labels,
    check_topk,
    constant_reason,
    describe,
    ranking_report,
)
from modules.reward_models import TransitionReward

LABEL_CHUNK = 256


class MARLSLLearner(OfflineLearner):
    batches = frozenset({"preferences"})
    labels_at_end = True
    label_name_key = "marl_sl_label_name"  # the config key naming its labels (errors name it)
    reads_rewards = False  # it learns them from the preferences
    trains_actor = False  # step 1 learns a reward, not a policy

    def __init__(self, mac, scheme, logger, args):
        self.mac, self.logger, self.args = mac, logger, args
        self.reward_model = TransitionReward(int(args.state_shape), args.n_agents, args.n_actions,
                                             args.marl_sl_hidden_dim)
        self.params = list(self.reward_model.parameters())
        self.optimiser = make_optimizer(self.params, args)
        self.label_name = args.marl_sl_label_name or args.preference_set
        self.ceiling = None  # the preference set's oracle score (check_data); None = the true return
        self.log_stats_t = -args.learner_log_interval - 1
        self.guard = NonFiniteGuard(self, args, logger)

    @property
    def device(self):
        return self.mac.device

    def rewards(self, batch):
        """([B,T-1,1] r_t, [B,T-1,1] real-transition mask) of an EpisodeBatch."""
        dev = self.device
        r = self.reward_model(batch["state"].to(dev), batch["actions_onehot"].to(dev).float())
        return r, transition_mask(batch).to(dev)

    def preference_logits(self, pairs):
        r, mask = self.rewards(pairs.episodes)
        g = (r * mask).sum(dim=(1, 2))
        return g[: pairs.n_pairs] - g[pairs.n_pairs:], r, mask

    def train(self, batches, t_env, episode_num):
        pairs = batches["preferences"]
        logits, r, mask = self.preference_logits(pairs)
        label = pairs.label.to(logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, label)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(self.params, self.args.grad_norm_clip)
        if not self.guard.ok({"reward_loss": loss, "grad_norm": grad_norm}, t_env, [self.optimiser]):
            return {"loss": loss.item()}
        self.optimiser.step()
        if t_env - self.log_stats_t >= self.args.learner_log_interval:
            with th.no_grad():
                decided = label != 0.5
                accuracy = ((logits > 0).float() == label)[decided].float().mean() if decided.any() else th.nan
            for k, v in {"reward_loss": loss, "grad_norm": grad_norm, "preference_accuracy": accuracy,
                         "reward_hat_mean": masked_mean(r, mask)}.items():
                self.logger.log_stat(k, float(v.detach()) if th.is_tensor(v) else float(v), t_env)
            self.log_stats_t = t_env
        return {"loss": loss.item()}

    def check_data(self, datasets):
        check_topk(int(self.args.topk_expert), len(datasets["preferences"].dataset))  # as O-MAPL's (the report's K)
        check_new_labels(datasets["preferences"].dataset, [f"{self.label_name}_reward_hat"], self.args.label_overwrite,
                         self.args.model_dir)
        self.ceiling = datasets["preferences"].ceiling

    @th.no_grad()
    def label_dataset(self, data, step):
        T1 = data.env_info["episode_limit"] + 1
        out = np.zeros((len(data), T1, 1), dtype=np.float32)
        real = []  # the rewards of real transitions (padding is not a reward)
        for start in range(0, len(data), LABEL_CHUNK):
            rows = np.arange(start, min(len(data), start + LABEL_CHUNK))
            batch = data.episode_batch(rows)
            batch = batch[:, : batch.max_t_filled()]
            r, mask = self.rewards(batch.to(self.device) if self.args.device != "cpu" else batch)
            out[rows, : r.shape[1]] = (r * mask).cpu().numpy()
            real.append(r[mask.bool()].cpu().numpy())
        bad = ~np.isfinite(out).all(axis=(1, 2))
        if bad.any():
            raise RecoveredReturnError(self.guard.learner, {"episodes": int(bad.sum())}, step, self.guard.step_name)
        report = ranking_report({"sum": out.sum(axis=(1, 2))}, data, int(self.args.topk_expert), self.ceiling,
                                what="summed learned rewards")
        entry = report["sum"]
        constant = constant_reason(np.concatenate(real), "learned rewards of the real transitions")
        stats = {} if entry["spearman_true_return"] is None else {"return_hat_spearman": entry["spearman_true_return"]}
        if entry["precision"] is not None:
            stats["topk_precision"] = entry["precision"]
        summary = f"episodes ranked by the summed learned reward: {describe(entry, report['topk_expert'])}"
        # constant rewards (e.g. a reward model that learned nothing): run: offline writes no label from them
        return {"labels": {f"{self.label_name}_reward_hat": out}, "stats": stats,
                "info": {"label_name": self.label_name, "step": step, **report}, "summary": summary,
                "refused": constant or entry["undefined"]}

    def state_parts(self):
        return {"reward_model": self.reward_model, "opt": self.optimiser}
