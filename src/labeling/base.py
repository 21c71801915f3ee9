"""The two interfaces of the labeling layer: a task (what is asked, about which items, what a right answer is,
where answers are stored) and a labeler (who answers: the rule oracle, a noisy oracle, an LLM).

Any labeler answers any task, so a new task (CODI's agent quality, LCA's agent-specific rankings) needs no labeler
code, and a new labeler needs no task code. Answers are floats, one per item, NaN = unlabeled (an LLM answer that
could not be parsed stays unlabeled: it is never filled in from the oracle). A task decides what its numbers mean
(trajectory_preference: 1 = first preferred, 0 = second, 0.5 = tie). A task whose `queries(args)` is an int K gets
K answers per item instead: answers [N, K] (lca_state_pair: K votes on each pair).

    task = TASKS["trajectory_preference"]()
    items = task.make_items(source, args)
    result = LABELERS["oracle"](args).label(task, items, source)
    task.store(source, items, result.answers, {**result.info, ...}, args)
"""
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Item:
    """One question. `id` is stable across runs and orders ("pair:00012:00845"): noisy answers are seeded by it and
    caches and journals are keyed by it. `data` is the task's own payload (episode indices for a pair)."""
    id: str
    data: Any


@dataclass
class LabelSource:
    """What items are drawn from: a dataset in memory (offline.reader.OfflineDataset), the file it was read from,
    its content fingerprint (offline.label_store.content_fingerprint: stored with the labels so they are never
    applied to other episodes), and the env for prompts, built on first use by `env_factory` (oracle labelers never
    build one). `args`: the run's config namespace, for tasks and labelers that need settings (gamma, ...)."""
    dataset: Any
    path: str
    fingerprint: str
    env_factory: Callable[[], Any] | None = None
    _env: Any = field(default=None, repr=False)

    @property
    def env(self):
        if self._env is None:
            if self.env_factory is None:
                raise ValueError(f"no env for the prompts of {self.path}: build the LabelSource with an env_factory")
            self._env = self.env_factory()
        return self._env

    def close(self):
        if self._env is not None and hasattr(self._env, "close"):
            self._env.close()
        self._env = None

    @property
    def name(self):
        return os.path.basename(self.path)


@dataclass
class LabelResult:
    """A labeler's answers [len(items)] float (or [len(items), K] for a task with K queries; NaN = unlabeled) and
    what it reports: provenance for the stored
    attrs (labeler, oracle key/accuracy, noise mode, backend, model, sampling, prompt hashes, ...) and counts
    (labeled, tie, unparsed, requests, tokens, cost_usd, position_bias_rate, ...). Everything in `info` must be
    JSON-able: it is stored with the labels and in the run's Sacred info. A labeler that stopped before answering
    every item says so (`complete: False`, or `stopped` / `failed` / `unasked`): the run mode then stores what it
    has and a rerun with the same settings labels again instead of keeping the set."""
    answers: np.ndarray
    info: dict = field(default_factory=dict)


def answer_counts(answers) -> dict:
    """The counts every labeling run reports, from the answers (NaN = unlabeled, 0.5 = a tie): a labeler's `info`
    may give its own (the llm labeler's unparsed replies), else these are used."""
    answers = np.asarray(answers, dtype=float)
    labeled = np.isfinite(answers)
    return {"labeled": int(labeled.sum()), "tie": int((answers == 0.5).sum()), "unparsed": int((~labeled).sum())}


class LabelTask:
    """A kind of question (registry: labeling.TASKS, name -> class; instantiated without arguments, so settings
    come from `args` in each call). Subclasses set `name` and implement the methods; `oracle_batch` and `unswap` have
    defaults."""
    name = ""
    # whether an item can be asked with its two parts in the other order (swap_order); tasks without an order: False
    swappable = False
    # the settings key of the source's fingerprint (an existing set is reused only when it is the same)
    fingerprint_key = "dataset_fingerprint"

    def queries(self, args) -> int | None:
        """How many answers each item gets: None = one (answers [N], the default), an int K = K distinct samples
        (answers [N, K]; the llm labeler asks them as n=K samples of one request, the noisy oracle draws K copies).
        """
        return None

    def make_source(self, args, env_factory) -> LabelSource | None:
        """The LabelSource of a labeling run (its `path` is where `store` writes, its fingerprint names the items);
        None (default) = the run's offline_dataset (run/label.py loads it). A task that makes its own items from
        the env (lca_state_pair) returns its own."""
        return None

    def settings(self, args) -> dict:
        """The task's settings that decide its items and ground truth (stored as provenance; an existing set is
        reused only when these, the labeler's settings and the data are the same)."""
        return {"task": self.name}

    def make_items(self, source: LabelSource, args) -> list[Item]:
        """The items to label (seeded by the task's own keys in `args`), ids stable."""
        raise NotImplementedError

    def oracle(self, item: Item, source: LabelSource, args) -> float:
        """The ground-truth answer (the rule of B.2.1 for preferences)."""
        raise NotImplementedError

    def oracle_batch(self, items: list[Item], source: LabelSource, args) -> np.ndarray:
        """oracle() of many items (override to vectorise: the oracle labelers call this)."""
        return np.array([self.oracle(it, source, args) for it in items], dtype=np.float64)

    def chance(self, source: LabelSource) -> float | None:
        """The accuracy of a uniform guess among an item's answers (None: not defined for this task). A noisy_oracle
        below it answers worse than guessing: the run warns (run/label.py)."""
        return None

    def wrong_answers(self, item: Item, correct: float) -> list[float]:
        """What a wrong labeler says instead of `correct` (noisy_oracle picks one of them, seeded by the item)."""
        raise NotImplementedError

    def messages(self, item: Item, source: LabelSource, args, swapped: bool = False) -> list[dict]:
        """The chat messages that ask `item` ([{"role", "content"}]); swapped: its parts in the other order."""
        raise NotImplementedError(f"task '{self.name}' has no prompt: only the oracle labelers can answer it")

    def parse(self, text: str, item: Item) -> float | None:
        """The answer in a model's reply text, or None when the reply gives no clear answer (unparsed)."""
        raise NotImplementedError(f"task '{self.name}' has no parser: only the oracle labelers can answer it")

    def prompter(self, source: LabelSource, args, fmt: str):
        """What the llm labeler asks of this task: an object with messages(item, swapped), reask(messages, reply),
        response_format(), parse(text, item) -> (value or None, how) and provenance(). fmt: the labeler's answer
        format (json | text). Default: this task's own messages/parse (labeling.prompting.TaskPrompt)."""
        from labeling.prompting import TaskPrompt
        return TaskPrompt(self, source, args)

    def answer_values(self, item: Item, args) -> tuple | None:
        """The answers a labeler can give `item` (the llm labeler checks its journal against them), or None when any
        finite number can be one (the default)."""
        return None

    def unswap(self, answer: float) -> float:
        """An answer to the swapped question, as an answer to the item as stored."""
        return answer

    def accuracy(self, items: list[Item], answers: np.ndarray, source: LabelSource, args) -> dict:
        """Quality of `answers` against the ground truth (JSON-able dict: agreement, rates, ...)."""
        raise NotImplementedError

    def stored_file(self, source: LabelSource, args) -> str:
        """The file `stored` looks in: where `store` will read the dataset from (offline.label_store.edit_dataset):
        label_out when that file exists (sets are added to it), else the source file (a new label_out starts as a
        copy of it, sets included)."""
        out = args.label_out
        return out if out and os.path.exists(out) else source.path

    def stored(self, source: LabelSource, args) -> dict | None:
        """The attrs of the result already stored under this run's name (where `store` would write), or None: the
        run mode reuses it when its settings are the run's, and refuses to replace it otherwise (label_overwrite).
        A damaged one also has `damaged`, its DatasetError (offline.label_store.stored_attrs): never kept, replaced
        only with label_overwrite."""
        return None

    def store(self, source: LabelSource, items: list[Item], answers: np.ndarray, attrs: dict, args,
              overwrite: bool = False) -> str:
        """Write the answers with `attrs` (provenance) where the task keeps them (an existing result of the same
        name is an error unless overwrite); returns the path written."""
        raise NotImplementedError


class Labeler:
    """Answers any task's items (registry: labeling.LABELERS, name -> class; built as `Labeler(args)`).
    `label` may be given a progress bar (utils.progress.Bar over the items) to advance and annotate. Subclasses set
    `name` (their registry name: logs, settings and stored provenance show it)."""
    name = ""

    def __init__(self, args):
        self.args = args

    def label(self, task: LabelTask, items: list[Item], source: LabelSource, bar=None) -> LabelResult:
        raise NotImplementedError

    def settings(self) -> dict:
        """The settings that decide this labeler's answers (stored as provenance; an existing set is reused only
        when these, the task's settings and the data are the same)."""
        return {"labeler": self.name}
