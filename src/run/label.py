"""Run mode `label` (`--config=label_preferences`, `--config=label_agent_quality`): a labeler answers a task's items
about a dataset and the answers are stored in the dataset file (labeling/; the layout: offline/label_store.py).

    python src/main.py --config=label_preferences --env-config=lbf_8x8_2p_2f_coop \\
        with offline_dataset=results/datasets/.../mix_200e_1000p.h5 labeler=noisy_oracle oracle_accuracy=0.75

A task may bring its own source instead of offline_dataset (LabelTask.make_source: lca_state_pair samples its items
from the env and writes a rankings file under results/rankings/, --config=lca_label); its `path` is where the task
stores, its fingerprint enters the settings under the task's `fingerprint_key`.

An existing result of the same `label_name` is kept when it was made with the same task and labeler settings from
the same episodes (a rerun is a no-op, as `collect` keeps complete datasets), unless the labeler reported it
incomplete (an LLM budget stop: the rerun labels again, its cache answering what was asked before). With other
settings it is an error naming the differences; `label_overwrite=True` replaces it. The same rule (keep_stored)
holds when a preference set or a single per-episode label is stored and another run stored it meanwhile (two runs
sharing an LLM cache): a complete one of the same settings is kept whatever its answers, an incomplete one is
replaced by a complete one, of two incomplete ones the one with more labels stays (a warning: a rerun labels the
rest); one of other settings is refused. (lca_state_pair rankings are not covered: their writer refuses an existing
file.) A damaged one is never kept: an error naming
scripts/edit_labels.py, or replaced with `label_overwrite=True`. A set is only ever written complete
(copy, edit, rename), so an interrupted run leaves the file as it was.
"""
import difflib
import fnmatch
import json
import os
import time

import numpy as np

from augmenters import REGISTRY as AUGMENTERS
from envs import env_from_args
from labeling import LABELERS, TASKS
from labeling.base import LabelResult, LabelSource, answer_counts
from labeling.store import check_name, content_fingerprint
from offline.format import DatasetError, missing_dataset
from offline.label_edit import derived_labels
from offline.label_store import LabelExistsError, edit_dataset
from offline.reader import OfflineDataset
from run.setup import simple_run
from utils.config import ConfigError
from utils.files import clean_stale_temps
from utils.paths import unseeded
from utils.progress import Bar


def pick(registry, name, key):
    if name not in registry:
        close = difflib.get_close_matches(str(name), list(registry), n=3)
        raise ValueError(f"unknown {key} '{name}'; choose one of {sorted(registry)}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return registry[name]


def dataset_path(value):
    if not isinstance(value, str):
        raise ConfigError(f"offline_dataset must be one file for labeling (labels name its episodes), got {value!r}")
    if not value:
        raise ConfigError("run=label needs a dataset: with offline_dataset=path/to/data.h5 (collect one with "
                         "--config=collect)")
    if not os.path.isfile(value):
        raise missing_dataset(f"offline_dataset {value}")
    return value


def check_not_reserved(name):
    """A label_name that an augmenter writes into its source dataset (`writes_labels`: CODI's codi_z) is refused:
    the two would replace each other's labels."""
    for augmenter, cls in sorted(AUGMENTERS.items()):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in cls.writes_labels):
            raise ConfigError(f"label_name={name} is a name augmenter {augmenter} stores its own labels under "
                              f"(labels/{' or '.join(cls.writes_labels)} of the dataset); choose another label_name, "
                              f"e.g. best_agent (CODI fits its labeler on it with augment_label_name=best_agent)")


def check_label_out(value, source_path):
    """label_out (labels into a copy of the dataset): a file path; an existing file must be a dataset (sets are
    added to it); refused before any labeling."""
    if not value:
        return
    if os.path.isdir(value):
        raise ConfigError(f"label_out={value} is a folder; give the path of a dataset file to write, e.g. "
                          f"{os.path.join(value, os.path.basename(source_path))}")
    if os.path.exists(value):
        try:
            OfflineDataset.load(value, lazy=True).close()
        except (DatasetError, OSError) as e:
            raise ConfigError(f"label_out={value} exists and is not a dataset file ({e}); give a new path (a copy of "
                              f"{source_path} is made there) or an earlier labeled copy of it") from e


def differences(stored, wanted):
    return [f"{k}: stored {stored.get(k)!r}, requested {wanted.get(k)!r}"
            for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]


def is_complete(info):
    """Whether a labeler answered every item it could: its own `complete` flag, else no stop (budget, replay cache
    miss), no failed requests and no unasked items (the llm labeler's counts). Unparsed replies count as answered:
    asking again gives the same reply."""
    if "complete" in info:
        return bool(info["complete"])
    return not info.get("stopped") and not info.get("failed") and not info.get("unasked")


def check_result(labeler, result, n_items, queries):
    """A labeler's result as the run reads it: a LabelResult whose answers are [n_items] (or [n_items, K] for a task
    of K queries); anything else is refused naming the labeler, instead of failing later in accuracy or storage."""
    who = f"labeler '{labeler.name}' ({type(labeler).__name__})"
    if not isinstance(result, LabelResult):
        raise TypeError(f"{who} returned a {type(result).__module__}.{type(result).__name__}; label() must return "
                        f"labeling.base.LabelResult(answers, info)")
    expected = (n_items,) if queries is None else (n_items, queries)
    shape = result.answers.shape if isinstance(result.answers, np.ndarray) else None
    if shape is None or tuple(shape) != expected:
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(result.answers).__name__}"
        raise ValueError(f"{who} returned answers of {got} for {n_items} items; expected a numpy array of shape "
                         f"{expected}: one float per item{' and query' if queries else ''} in item order, NaN = "
                         f"unlabeled")


def summary(accuracy):
    """One console line of a task's accuracy dict."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k} {fmt(v)}" for k, v in accuracy.items())


def dataset_source(args):
    """The default LabelSource: the run's offline_dataset (checked against the run's env), its content
    fingerprint, and the run's env for prompts."""
    path = dataset_path(args.offline_dataset)
    env_args = unseeded(args.env_args)
    dataset = OfflineDataset.load(path, expect_env=(args.env, env_args))
    return LabelSource(dataset, path, content_fingerprint(dataset), env_factory=lambda: env_from_args(args))


def run_label(_run, config, _log):
    with simple_run(config, _log, _run) as (args, _):
        return label(args, _log, _run)


def label(args, _log, _run=None):
    """Label (or find already labeled) the items of args.label_task with args.labeler; returns the run info
    (`labeling` in info.json): path, reused, accuracy, counts, labeler_info (the llm labeler's requests, tokens and
    cost; on reuse, the stored run's), settings. Also called by other run modes that need a task's result
    (run/lca_pipeline.py: the rankings of shaper=lca)."""
    task = pick(TASKS, args.label_task, "label_task")()
    labeler = pick(LABELERS, args.labeler, "labeler")(args)
    check_name(args.label_name)
    check_not_reserved(args.label_name)
    own = task.make_source(args, lambda: env_from_args(args))  # None: the task labels offline_dataset
    if own is None:
        check_label_out(args.label_out, dataset_path(args.offline_dataset))
    source = own or dataset_source(args)
    path = source.path
    clean_stale_temps(os.path.dirname(os.path.abspath(args.label_out or path)))
    settings = json.loads(json.dumps({**task.settings(args), **labeler.settings(),
                                      task.fingerprint_key: source.fingerprint}))
    info = {"task": task.name, "labeler": labeler.name, "label_name": args.label_name, "dataset": path,
            "settings": settings}
    if _run is not None:
        _run.info["labeling"] = info
    try:
        stored = task.stored(source, args)
        overwrite = bool(args.label_overwrite)
        # where the stored result was looked for: an existing label_out, else the dataset (a new label_out starts
        # as its copy, so a set of this name in the dataset would be in it)
        target = task.stored_file(source, args) if own is None else (args.label_out or path)
        if stored is not None:
            if keep_stored(stored, settings, target, args, task.name, _log):
                _log.info(f"'{args.label_name}' in {target} was made with the same settings from the same items "
                          f"({stored.get('created', '?')}): kept, 0 labels asked (label_overwrite=True labels again)")
                if own is None and args.label_out and not os.path.exists(args.label_out):
                    # the requested copy, holding the set as it is
                    target = edit_dataset(path, lambda f, E: None, source.fingerprint, out=args.label_out)
                    _log.info(f"Copied {path} (with '{args.label_name}') to label_out={target}")
                info.update(reused=True, path=target, accuracy=stored.get("accuracy"), counts=stored.get("counts"),
                            labeler_info=stored.get("labeler_info"))
                _log.info(f"Accuracy vs ground truth: {summary(stored.get('accuracy') or {})}")
                return info
            overwrite = True
        items = task.make_items(source, args)
        chance = task.chance(source)
        if args.labeler == "noisy_oracle" and chance is not None and float(args.oracle_accuracy) < chance:
            _log.warning(f"oracle_accuracy={args.oracle_accuracy} is below chance for {task.name} ({chance:.3g}, a "
                         f"uniform guess): the noisy oracle answers wrong more often than guessing would; fine for "
                         f"an adversarial-label ablation, otherwise raise it (e.g. 0.8)")
        what = f"{path} ({len(source.dataset)} episodes)" if own is None else f"env {args.env} (to {path})"
        _log.info(f"Labeling {len(items)} {task.name} items of {what} with labeler '{labeler.name}' -> "
                  f"'{args.label_name}'")
        start = time.perf_counter()
        with Bar(len(items), desc=f"labeling {args.label_name}", unit="item") as bar:
            result = labeler.label(task, items, source, bar=bar)
        seconds = time.perf_counter() - start
        check_result(labeler, result, len(items), task.queries(args))
        if "queries_to_ask" in result.info:  # the llm labeler: what a resumed run still had to ask
            i = result.info
            _log.info(f"{i['from_journal']} of {len(items)} items answered by the journal; {i['queries_to_ask']} "
                      f"queries to ask for the others ({i['requests']} server requests sent, {i['cache_hits']} cache "
                      f"hits)")
        counts = {k: result.info.get(k, v) for k, v in answer_counts(result.answers).items()}
        # the llm labeler's: items without a final answer, by why
        reasons = {k: result.info[k] for k in ("failed", "cut", "unfinished", "unasked") if result.info.get(k)}
        if "unparsed" not in result.info:  # the NaN answers other than those given a reason: not counted twice
            counts["unparsed"] = max(0, counts["unparsed"] - sum(reasons.values()))
        counts.update(reasons)
        rate = len(items) / max(seconds, 1e-9)
        ties = f"{counts['tie']} ties, " if task.swappable or counts["tie"] else ""  # only answers with a tie
        missing = "".join(f", {counts[k]} {what}" for k, what in (
            ("failed", "failed (no answer: request errors)"),
            ("cut", "with only empty or cut replies (asked again on rerun)"),
            ("unfinished", "asked but not finished (the run stopped before their answer, e.g. their re-ask)"),
            ("unasked", "not asked")) if k in counts)
        queries = task.queries(args)
        what = (f"{counts['labeled']} of {len(items) * queries} answers labeled ({queries} queries per item), "
                if queries else f"{counts['labeled']} labeled, ")
        _log.info(f"Labeled {len(items)} items in {seconds:.2f}s ({rate:.0f} items/s): {what}"
                  f"{ties}{counts['unparsed']} unparsed{missing}")
        errors = result.info.get("errors") or []
        if counts.get("failed") == len(items) and not result.info.get("stopped"):  # every request errored: say why,
            # and store no empty set (a stop, e.g. a replay cache miss, stores what it has and says why itself)
            raise RuntimeError(f"every one of the {len(items)} items failed, nothing was stored; the first error: "
                               f"{errors[0] if errors else 'unknown'}. Fix the cause (llm.base_url, the server, the "
                               f"API key) and rerun the same command")
        accuracy = task.accuracy(items, result.answers, source, args)
        _log.info(f"Accuracy vs ground truth: {summary(accuracy)}")
        attrs = {"task": task.name, "label_name": args.label_name, "settings": settings, "labeler_info": result.info,
                 "accuracy": accuracy, "counts": counts, "complete": is_complete(result.info),
                 "seconds": seconds}
        try:
            written = task.store(source, items, result.answers, attrs, args, overwrite=overwrite)
        except LabelExistsError:  # another run stored this name meanwhile: the rule of the check above decides
            stored = task.stored(source, args)
            target = task.stored_file(source, args)
            if stored is None:
                raise
            if keep_stored(stored, settings, target, args, task.name, _log, ours=attrs):
                _log.info(f"'{args.label_name}' in {target} was stored meanwhile by another run with the same "
                          f"settings ({stored.get('created', '?')}): kept, this run's answers are not stored "
                          f"(label_overwrite=True labels again)")
                info.update(reused=True, path=target, accuracy=stored.get("accuracy"), counts=stored.get("counts"),
                            labeler_info=stored.get("labeler_info"), seconds=seconds, items_per_s=rate)
                return info
            written = task.store(source, items, result.answers, attrs, args, overwrite=True)
        _log.info(f"Stored '{args.label_name}' ({len(items)} items) in {written}")
        if stored is not None and own is None:  # a replaced set: labels computed from the old one are stale
            stale = derived_labels(written, args.label_name)
            if stale:
                _log.warning(f"{written}: labels {stale} were derived from the replaced preference set "
                             f"'{args.label_name}'; runs that use them are refused until they are made again from "
                             f"this set (e.g. --config=omapl with preference_set={args.label_name} "
                             f"label_overwrite=True)")
        if not attrs["complete"]:
            why = result.info.get("stopped") or (f"failed requests, the first: {errors[0]}" if errors
                                                 else "failed requests")
            _log.warning(f"'{args.label_name}' is incomplete ({why}): the answers so far are stored; rerun the same "
                         f"command to ask the rest")
        info.update(reused=False, path=written, accuracy=accuracy, counts=counts, labeler_info=result.info,
                    seconds=seconds, items_per_s=rate)
        return info
    finally:
        source.close()


def keep_stored(stored, settings, target, args, task_name, _log, ours=None):
    """Whether to keep the result `stored` (task.stored, not None) that holds this run's label_name in `target`; the
    one rule before labeling and at store time, when another run stored it meanwhile (`ours`: this run's attrs).
    Refused (an error): one no labeling run made; a damaged one or one of other settings, unless label_overwrite
    (which replaces any of them: False). With these settings a complete one is kept; an incomplete one is replaced
    (labeled again) before labeling, and at store time by ours when ours is complete, else the one with more
    labels is kept (ours on a tie), with a warning."""
    name = args.label_name
    # e.g. CODI's distilled labels/codi_z: never replaced (a damaged one whose attrs are lost may be)
    if "settings" not in stored and set(stored) != {"damaged"}:
        raise ConfigError(f"{target} already has '{name}', which no labeling run made (labels another tool wrote, "
                          f"such as CODI's distilled labels codi_z): choose another label_name")
    if stored.get("damaged") is not None:  # never kept
        if not args.label_overwrite:
            raise DatasetError(f"{stored['damaged']} (or label again with label_overwrite=True, which replaces it)")
        _log.warning(f"'{name}' in {target} is damaged: labeling again to replace it (label_overwrite=True)")
        return False
    if args.label_overwrite:
        return False
    if stored.get("settings") != settings:
        raise ConfigError(f"{target} already has '{name}' ({task_name}) made with other settings: "
                          + "; ".join(differences(stored.get("settings") or {}, settings))
                          + ". Choose another label_name, or set label_overwrite=True to replace it")
    if stored.get("complete", True):
        return True
    if ours is None:
        _log.info(f"'{name}' in {target} is incomplete ({stored.get('counts')}): labeling again")
        return False
    if ours["complete"]:
        return False

    def labeled(attrs):
        return (attrs.get("counts") or {}).get("labeled") or 0

    keep = labeled(stored) > labeled(ours)
    _log.warning(f"'{name}' in {target} was stored meanwhile by another run with the same settings; both are "
                 f"incomplete, so the one with more labels is kept ({'that run' if keep else 'this run'}'s: "
                 f"{max(labeled(stored), labeled(ours))} labeled): rerun the same command to label the rest")
    return keep
