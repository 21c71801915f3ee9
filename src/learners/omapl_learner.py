"""O-MAPL (offline multi-agent preference learning; MisoDICE phase 1, research notes offline.md §4.2), discrete
actions: OMIGA's networks trained from trajectory preferences instead of rewards.

Q_i(o_i, .), V_i(o_i) (critic_agent networks, shared + agent id) and an `lmix` mixer (w(s) >= 0, linear). The
implied reward of a real transition (inverse soft Bellman; padded steps never enter a sum):

    R_t = Q_tot(s_t, a_t) - gamma (1 - d_t) V_tot'(s_{t+1})      (online Q and mixer; target V and target mixer)
    L_Q = BCE_with_logits(sum_t R_t(sigma_1) - sum_t R_t(sigma_2), label) + omapl_reward_reg * mean_t R_t^2

(label 1 = sigma_1 preferred, 0.5 = tie; unlabeled pairs never reach the learner). V: OMIGA's extreme-V loss; the
actor (this run's policy = the OMAPL baseline): exp(z)-weighted BC, both on the transitions of both episodes.

At every evaluation and at the end it ranks every episode of the dataset by G = sum_t R_t (paper; `omapl_rank_by:
mean` ranks by G / length; both are reported) and flags the top `topk_expert` (ties: utils.ranking's fixed tie
order) as expert. The run writes labels/<name>_return_hat [E] and labels/<name>_expert [E] (uint8) into the
dataset; phase 2 reads them with offline_expert=label:<name>_expert. Constant recovered returns (a top K that is only
the tie order's choice) are refused at the end: no label is written.
"""

import numpy as np
import torch as th
import torch.nn.functional as F

from learners.common import check_actions_available, masked_mean, transition_mask
from learners.episode_ranking import RecoveredReturnError, check_new_labels, check_topk, describe, ranking_report, top_k
from learners.omiga_learner import OMIGALearner

LABEL_CHUNK = 256  # episodes per forward pass when the whole dataset is scored
RANK_BY = ("sum", "mean")


def implied_returns(r_hat, mask):
    """[B] sum_t R_t over real transitions (mask [B,T-1,1])."""
    return (r_hat * mask).sum(dim=(1, 2))


class OMAPLLearner(OMIGALearner):
    batches = frozenset({"preferences"})
    labels_at_end = True
    label_name_key = "omapl_label_name"  # the config key naming its labels (errors name it)
    reads_rewards = False  # it recovers them from the preferences
    counters = ("log_stats_t", "train_steps", "topk_prev", "topk_stable_since")

    def __init__(self, mac, scheme, logger, args):
        super().__init__(mac, scheme, logger, args)
        if args.omapl_rank_by not in RANK_BY:
            raise ValueError(f"omapl_rank_by must be one of {RANK_BY}, not '{args.omapl_rank_by}'")
        self.label_name = args.omapl_label_name or args.preference_set
        self.topk_prev, self.topk_stable_since = [], 0  # the last evaluation's top-K, and since when it holds
        self.ceiling = None  # the preference set's oracle score (check_data); None = the true return

    # ----- training -----
    def implied_reward(self, batch):
        """([B,T-1,1] R_t, [B,T-1,1] real-transition mask, inputs, actions, stats) of an EpisodeBatch."""
        dev = self.device
        mask = transition_mask(batch).to(dev)
        actions = batch["actions"][:, :-1].to(dev)
        inputs = self.mac._build_inputs_seq(batch)
        q_tot, q_taken, w, b = self.q_tot(batch, inputs, actions)
        stats = {"q_tot_mean": masked_mean(q_tot, mask), "mixer_w_mean": masked_mean(w, mask.expand_as(w))}
        return q_tot - self.bootstrap(batch, inputs), mask, inputs, actions, stats

    def preference_logits(self, pairs):
        """(logits [P] = G(sigma_1) - G(sigma_2), R_t, mask, inputs, actions, stats) of a PairBatch."""
        r_hat, mask, inputs, actions, stats = self.implied_reward(pairs.episodes)
        g = implied_returns(r_hat, mask)
        return g[: pairs.n_pairs] - g[pairs.n_pairs:], r_hat, mask, inputs, actions, stats

    def batch_losses(self, batches):
        pairs = batches["preferences"]
        batch = pairs.episodes
        check_actions_available(batch, transition_mask(batch).expand(-1, -1, self.n_agents))
        logits, r_hat, mask, inputs, actions, stats = self.preference_logits(pairs)
        label = pairs.label.to(logits.device)
        pref_loss = F.binary_cross_entropy_with_logits(logits, label)
        reward_reg = masked_mean(r_hat.pow(2), mask)
        q_loss = pref_loss + self.args.omapl_reward_reg * reward_reg
        v_loss, actor_loss, vstats = self.value_policy_losses(batch, inputs, actions, mask)
        with th.no_grad():
            decided = label != 0.5
            agree = ((logits > 0).float() == label)[decided].float()
            stats.update(vstats, preference_loss=pref_loss, reward_hat_sq=reward_reg,
                         reward_hat_mean=masked_mean(r_hat, mask),
                         preference_accuracy=agree.mean() if decided.any() else th.tensor(float("nan")))
        return {"actor_loss": actor_loss, "q_loss": q_loss, "v_loss": v_loss}, stats

    def losses(self, batch):
        raise TypeError("O-MAPL trains on preference pairs (batch_losses), not on a batch of episodes")

    @th.no_grad()
    def validation_loss(self, batch):
        return {}

    # ----- labels -----
    def label_names(self):
        return [f"{self.label_name}_return_hat", f"{self.label_name}_expert"]

    def check_data(self, datasets):
        data = datasets["preferences"].dataset
        check_topk(int(self.args.topk_expert), len(data))
        check_new_labels(data, self.label_names(), self.args.label_overwrite, self.args.model_dir)
        self.ceiling = datasets["preferences"].ceiling

    @th.no_grad()
    def recovered_returns(self, data):
        """(G [E] = sum_t R_t, lengths [E]) for every episode of `data`, in its order."""
        returns, lengths = [], []
        for start in range(0, len(data), LABEL_CHUNK):
            batch = data.episode_batch(np.arange(start, min(len(data), start + LABEL_CHUNK)))
            batch = batch[:, : batch.max_t_filled()]
            batch = batch.to(self.device) if self.args.device != "cpu" else batch
            r_hat, mask = self.implied_reward(batch)[:2]
            returns.append(implied_returns(r_hat, mask).cpu())
            lengths.append(mask.sum(dim=(1, 2)).cpu())
        return th.cat(returns).double().numpy(), th.cat(lengths).double().numpy()

    def label_dataset(self, data, step):
        g, lengths = self.recovered_returns(data)
        bad = ~np.isfinite(g)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise RecoveredReturnError(self.guard.learner, {"episodes": int(bad.sum()), f"G[{first}]": g[first]},
                                       step, self.guard.step_name)
        g = g.astype(np.float32)  # ranked as stored (labels/<set>_return_hat), so top:<set>_return_hat:K picks alike
        scores = {"sum": g, "mean": g / np.maximum(lengths, 1)}
        k = int(self.args.topk_expert)
        chosen = top_k(scores[self.args.omapl_rank_by], k)
        changed = k - len(set(self.topk_prev) & set(chosen.tolist())) if self.topk_prev else k
        if changed:
            self.topk_stable_since = step
        self.topk_prev = sorted(chosen.tolist())
        report = ranking_report(scores, data, k, self.ceiling)
        flags = np.zeros(len(data), dtype=np.uint8)
        flags[chosen] = 1
        stats = {"topk_changed": changed, "topk_stable_since": self.topk_stable_since}
        for name in RANK_BY:
            if report[name]["precision"] is not None:
                stats[f"topk_precision_{name}"] = report[name]["precision"]
            if report[name]["spearman_true_return"] is not None:
                stats[f"return_hat_spearman_{name}"] = report[name]["spearman_true_return"]
        info = {"label_name": self.label_name, "rank_by": self.args.omapl_rank_by, "step": step,
                "topk_stable_since": self.topk_stable_since, **report}
        labels = dict(zip(self.label_names(), (g, flags)))
        # constant recovered returns: the top K is the tie rule's choice; run: offline writes no label from it
        return {"labels": labels, "stats": stats, "info": info, "summary": summary(report, self.args.omapl_rank_by),
                "attrs": {"rank_by": self.args.omapl_rank_by}, "refused": report[self.args.omapl_rank_by]["undefined"]}


def summary(report, rank_by):
    """One console line: top-K precision and recall per ranking beside the ceiling (ranking by the labeler's oracle
    score), and Spearman with the true return (each, or why it is undefined)."""
    k = report["topk_expert"]
    parts = [f"{name}{' (used)' if name == rank_by else ''}: {describe(report[name], k)}" for name in RANK_BY]
    c = report["ceiling"]
    ceiling = ("n/a (no ground truth)" if c["precision"] is None
               else f"precision {c['precision']:.3f} recall {c['recall']:.3f}")
    return (f"top-{k} of {report['episodes']} episodes by recovered return: " + "; ".join(parts)
            + f"; ceiling (ranking by the oracle's {c['oracle_key']}): {ceiling}")
