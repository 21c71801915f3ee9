"""Task `trajectory_preference`: which of two episodes of a dataset is better (MisoDICE B.2, O-MAPL's data).

Items are `n_pairs` distinct unordered pairs of distinct episodes, drawn with `pair_seed` (each pair shown in a
random order, so the first position is not always the lower index); id "pair:<first>:<second>". An answer is 1 when
the first is preferred, 0 the second, 0.5 a tie. The oracle (B.2.1) prefers the higher score:
  oracle_key=return              the stored episode_return
  oracle_key=discounted_return   sum_t gamma^t r_t over the episode's own transitions (padding never enters)
  oracle_key=quality             the ground-truth agent_quality ranks summed over agents (random < poor < medium
                                 < expert; the sum orders episodes as the mean does, every episode having n agents)
equal scores = tie. Stored as the dataset's preference set `label_name` (labeling/store.py).
"""
import os

import numpy as np

from labeling.base import Item, LabelTask
from labeling.prompting import PreferencePrompt
from labeling.store import store_preferences, stored_attrs
from offline.label_store import GROUP
from utils.config import ConfigError

QUALITY_RANKS = {"random": 0, "poor": 1, "medium": 2, "expert": 3}  # ordinal ground-truth qualities
ORACLE_KEYS = ("return", "discounted_return", "quality")


def sample_pairs(n_episodes, n_pairs, seed):
    """[n_pairs, 2] int64: distinct unordered pairs of distinct episodes (seeded), each in a random order."""
    E, n = int(n_episodes), int(n_pairs)
    possible = E * (E - 1) // 2
    if n < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n}")
    if n > possible:
        raise ConfigError(f"n_pairs={n} is more than the {possible} distinct pairs of {E} episodes; lower n_pairs")
    rng = np.random.default_rng(seed)
    k = rng.choice(possible, size=n, replace=False)  # indices of unordered pairs j > i: k = j(j-1)/2 + i
    j = np.floor((1 + np.sqrt(1 + 8 * k.astype(np.float64))) / 2).astype(np.int64)
    j -= (j * (j - 1) // 2 > k)  # float rounding near the boundaries
    j += ((j + 1) * j // 2 <= k)
    i = k - j * (j - 1) // 2
    pairs = np.stack([i, j], axis=1)
    flip = rng.random(n) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    return pairs


def pair_id(a, b, width=5):
    return f"pair:{a:0{width}d}:{b:0{width}d}"


def episode_scores(dataset, key, gamma):
    """[E] float64 score of every episode for the oracle."""
    if key == "return":
        return np.asarray(dataset.returns, dtype=np.float64)
    if key == "discounted_return":
        arr = dataset.arrays()
        reward = arr["reward"].reshape(len(dataset), -1).astype(np.float64)
        lengths = arr["filled"].reshape(len(dataset), -1).sum(1) - 1  # transitions 0..L-1; step L is the final state
        steps = np.arange(reward.shape[1])
        weights = np.where(steps[None] < lengths[:, None], gamma ** steps[None], 0.0)
        return (reward * weights).sum(1)
    if key == "quality":
        names = {v: k for k, v in dataset.quality_codes.items()}
        codes = dataset.quality_code_array
        ranks = np.full(codes.shape, -1, dtype=np.int64)
        for c in np.unique(codes):
            ranks[codes == c] = QUALITY_RANKS.get(names.get(int(c), "unknown"), -1)
        if (ranks < 0).any():
            bad = sorted({names.get(int(c), str(c)) for c in np.unique(codes[ranks < 0])})
            rows = np.flatnonzero((ranks < 0).any(1))
            raise ValueError(f"oracle_key=quality needs an ordinal ground-truth quality ({list(QUALITY_RANKS)}) for "
                             f"every agent; {len(rows)} episode(s) (e.g. {rows[:5].tolist()}) have {bad}: use "
                             f"oracle_key=return")
        return ranks.sum(1).astype(np.float64)
    raise ValueError(f"unknown oracle_key '{key}'; choose one of {list(ORACLE_KEYS)}")


def compare(a, b):
    """1 where a > b, 0 where a < b, 0.5 where equal."""
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


class TrajectoryPreference(LabelTask):
    name = "trajectory_preference"
    swappable = True

    def __init__(self):
        self._scores = {}  # (fingerprint, key, gamma) -> [E] scores

    def settings(self, args):
        if args.oracle_key not in ORACLE_KEYS:
            raise ValueError(f"unknown oracle_key '{args.oracle_key}'; choose one of {list(ORACLE_KEYS)}")
        out = {"task": self.name, "n_pairs": int(args.n_pairs), "pair_seed": int(args.pair_seed),
               "oracle_key": args.oracle_key}
        if args.oracle_key == "discounted_return":
            out["gamma"] = float(args.gamma)
        return out

    def make_items(self, source, args):
        E = len(source.dataset)
        pairs = sample_pairs(E, args.n_pairs, args.pair_seed)
        width = max(5, len(str(E - 1)))
        return [Item(pair_id(int(a), int(b), width), (int(a), int(b))) for a, b in pairs]

    def scores(self, source, key, gamma):
        k = (source.fingerprint, key, float(gamma))
        if k not in self._scores:
            self._scores[k] = episode_scores(source.dataset, key, gamma)
        return self._scores[k]

    def oracle_batch(self, items, source, args):
        s = self.scores(source, args.oracle_key, args.gamma)
        pairs = _pairs(items)
        return compare(s[pairs[:, 0]], s[pairs[:, 1]])

    def oracle(self, item, source, args):
        return float(self.oracle_batch([item], source, args)[0])

    def wrong_answers(self, item, correct):
        return [1.0, 0.0] if correct == 0.5 else [1.0 - correct]

    def unswap(self, answer):
        return 1.0 - answer

    def prompter(self, source, args, fmt):
        """Our role prompt and the env's episode summaries in the labeler's answer format (PreferencePrompt); the
        first summary is built now, so an env that cannot describe itself fails before any request."""
        prompt = PreferencePrompt(source.env, fmt, args.prompt_show_reward, args.summary_max_steps,
                                  source.dataset.arrays())
        prompt.summary(0)
        return prompt

    def messages(self, item, source, args, swapped=False):
        return self.prompter(source, args, "text").messages(item, swapped)

    def answer_values(self, item, args):
        return (0.0, 0.5, 1.0)  # second preferred, a tie (also: the two orders disagree), first preferred

    def parse(self, text, item):
        # the same rule as the prompter's (PreferencePrompt parses JSON or text answers with labeling/parse.py)
        from labeling.parse import parse_preference
        return parse_preference(text)

    def accuracy(self, items, answers, source, args):
        """Agreement with the return oracle (over labeled items, and over those where it has no tie), accuracy on
        expert-vs-non-expert pairs (one episode all agents expert, the other none: the mixture's expert-vs-poor),
        tie and unlabeled rates; with another oracle_key also the agreement with that oracle."""
        answers = np.asarray(answers, dtype=np.float64)
        pairs = _pairs(items)
        labeled = np.isfinite(answers)
        ret = self.scores(source, "return", args.gamma)
        truth = compare(ret[pairs[:, 0]], ret[pairs[:, 1]])
        out = {"items": len(items), "labeled": int(labeled.sum()),
               "unlabeled_rate": _rate(~labeled, np.ones_like(labeled)),
               "tie_rate": _rate(answers == 0.5, labeled),
               "return_tie_rate": _rate(truth == 0.5, np.ones_like(labeled)),
               "agreement_return": _rate(answers == truth, labeled),
               "agreement_return_nontie": _rate(answers == truth, labeled & (truth != 0.5))}
        if args.oracle_key != "return":
            other = self.oracle_batch(items, source, args)
            out[f"agreement_{args.oracle_key}"] = _rate(answers == other, labeled)
        names = {v: k for k, v in source.dataset.quality_codes.items()}
        expert_code = {v: k for k, v in names.items()}.get("expert")
        unknown = source.dataset.quality_codes.get("unknown", 0)
        if expert_code is not None:
            q = source.dataset.quality_code_array
            expert = (q == expert_code).all(1)
            other = ~(q == expert_code).any(1) & ~(q == unknown).any(1)
            a, b = pairs[:, 0], pairs[:, 1]
            ep = (expert[a] & other[b]) | (other[a] & expert[b])
            right = np.where(expert[a], 1.0, 0.0)
            out["expert_vs_poor_pairs"] = int(ep.sum())
            out["expert_vs_poor_accuracy"] = _rate((answers == right) & ep, labeled & ep)
        return out

    def stored(self, source, args):
        target = self.stored_file(source, args)
        return stored_attrs(target, GROUP, args.label_name) if os.path.exists(target) else None

    def store(self, source, items, answers, attrs, args, overwrite=False):
        return store_preferences(source, args.label_name, _pairs(items), np.asarray(answers, dtype=np.float32),
                                 attrs, out=args.label_out or None, overwrite=overwrite)


def _pairs(items):
    return np.array([it.data for it in items], dtype=np.int64).reshape(-1, 2)


def _rate(hit, over):
    n = int(np.sum(over))
    return float(np.sum(hit & over) / n) if n else None
