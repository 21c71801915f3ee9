"""Offline training (`run: offline`): a learner trained for `offline_steps` gradient steps on a fixed HDF5
dataset, evaluated with `test_nepisode` greedy online episodes every `offline_test_interval` steps.

    python src/main.py --config=bc --env-config=lbf_8x8_2p_2f_coop with offline_dataset=results/datasets/...h5

Logging is the online runs' (Sacred info/metrics, TensorBoard, console) with the gradient step as the x axis
(`t_env` in the logs); checkpoints go to results/models/<run>/<step>/ and `checkpoint_path` resumes a run.
With reference_return_low/high set, `test_normalised_score` = (R - low) / (high - low) is logged too.
"""
import os
from contextlib import contextmanager

import numpy as np

from labeling.trajectory_preference import episode_scores
from learners.common import NonFiniteError, UpdatesSkippedError
from learners.episode_ranking import own_labels
from offline.format import DatasetError
from offline.label_store import (
    EpisodesChangedError,
    LabelExistsError,
    content_fingerprint,
    label_id,
    preference_set_id,
    write_episode_labels,
)
from offline.preferences import check_stored_view, load_preferences
from offline.reader import dataset_fingerprint
from offline.sampling import LABEL_PREFIX, TOP_PREFIX, Sampler, dataset_paths, load_training_data, parse_top
from run import loop
from run.interrupt import CtrlC, interrupted
from run.setup import build
from utils.config import ConfigError
from utils.files import clean_stale_temps
from utils.logging import get_logger
from utils.progress import Bar, Clock

VALID_EPISODES = 256  # held-out episodes scored per evaluation (enough for a stable loss, cheap on CPU)


def offline_config(config):
    """The learner logs by gradient steps; env configs set learner_log_interval in env steps."""
    return dict(config, learner_log_interval=config["offline_log_interval"])


def run_offline(_run, config, _log):
    ctx = build(_run, offline_config(config), _log)
    clean_stale_temps(ctx.args.results_dir, depth=4)  # delete the litter of earlier runs killed mid-write
    args, runner, learner, logger = ctx.args, ctx.runner, ctx.learner, ctx.logger
    if not learner.offline:
        raise ValueError(f"learner '{args.learner}' trains from its own rollouts, not from datasets: run: offline "
                         f"needs an offline learner (bc, bc50, bc_beta, omar, omiga, misodice, misodice_vdn, indd)")
    leave_out_unread(args, learner, _log)
    data, valid, expert = load_training_data(args, runner.get_env_info(), _log)
    datasets = {"data": data, "expert": expert, "init": data}  # init: D_U's initial states (DICE's s0 batch)
    if args.preference_set or learner.labels_at_end:
        check_stored_view(f"preference_set={args.preference_set}" if args.preference_set else
                          f"learner '{args.learner}' (it labels the dataset)", len(dataset_paths(args.offline_dataset)),
                          args.offline_top_fraction, args.offline_valid_fraction, args.offline_reward)
    if args.preference_set:
        datasets["preferences"] = load_preferences(data, args.preference_set, args.max_unlabeled_fraction)
        if learner.labels_at_end:  # only a learner that ranks episodes reports a ceiling
            datasets["preferences"].ceiling = oracle_score(datasets["preferences"], args.gamma)
        for warning in (datasets["preferences"].incomplete(), datasets["preferences"].mostly_ties()):
            if warning:
                _log.warning(warning)
    missing = sorted(name for name in learner.batches if datasets.get(name) is None)
    if missing == ["expert"]:
        raise ValueError(f"learner '{args.learner}' needs expert data: set offline_expert=quality:expert "
                         f"(episodes labelled expert in the dataset), offline_expert=label:<name>_expert (O-MAPL's "
                         f"top-K), offline_expert=top:<name>_return_hat:<K> (another K) or "
                         f"offline_expert=path/to/expert.h5")
    if missing == ["preferences"]:
        raise ValueError(f"learner '{args.learner}' trains on trajectory preferences: set preference_set=<label_name> "
                         f"(a set stored in the dataset by --config=label_preferences)")
    if missing:
        raise ValueError(f"learner '{args.learner}' needs batches {missing}, which run: offline does not provide")
    learner.check_data({name: datasets[name] for name in learner.batches})
    warn_large_batches(args, learner, datasets, _log)
    causes = nonfinite_causes(args, data)  # named in a non-finite error: what to look at
    # the labels are written for the episodes as they are now (refused at the end if the file changed meanwhile)
    fingerprint = content_fingerprint(data) if learner.labels_at_end else None
    paths = dataset_paths(args.offline_dataset)
    if args.offline_expert and not args.offline_expert.startswith(("quality:", "label:", "top:")):
        paths.append(args.offline_expert)
    # path, bytes, SHA-256 of the file, episodes, created: of every file read (checkpoints keep them: resume checks)
    ctx.dataset_fingerprints = [dataset_fingerprint(p) for p in paths]
    record_reads(ctx.dataset_fingerprints, args)  # and the version of each label and preference set the run reads
    if _run is not None:
        _run.info["dataset"] = {"episodes": len(data), "mean_return": float(data.returns.mean()),  # ground truth
                                **({"label_mean_return": float(data.reward_returns().mean())}
                                   if args.offline_reward else {}),
                                "paths": dataset_paths(args.offline_dataset),
                                "expert_episodes": len(expert) if expert is not None else 0,
                                "fingerprints": ctx.dataset_fingerprints}
        if "preferences" in datasets:
            prefs = datasets["preferences"]
            settings = prefs.settings
            _run.info["preferences"] = {"name": prefs.name, **prefs.counts, "batch_pairs": args.preference_batch_size,
                                        "labeler": settings.get("labeler", prefs.attrs.get("labeler")),
                                        "complete": prefs.attrs.get("complete"),
                                        "label_accuracy": prefs.attrs.get("accuracy")}

    sampler = Sampler(args.seed)
    step, marks = 0, {"last_test": None, "last_log": 0, "last_save": 0}  # the steps of the latest test, log, save
    last_checkpoint = None  # the newest checkpoint this run saved or resumed from: named if training blows up
    if args.checkpoint_path:
        step, last_checkpoint, marks = resume(ctx, sampler, _log)
        ctx.last_checkpoint = last_checkpoint
    else:
        learner.fit_data(data)
    if args.checkpoint_path:
        where = f"checkpoints go to {args.model_dir}" if args.save_model else "save_model=False: no checkpoints"
        _log.info(f"Resuming offline training at gradient step {step} of {args.offline_steps} (seed {args.seed}; "
                  f"{where})")
    else:
        _log.info(f"Beginning offline training for {args.offline_steps} gradient steps "
                  f"(batch {batch_text(learner, args)})")
    per_step = episodes_per_step(learner, args)
    guard = getattr(learner, "guard", None)  # its count of updates skipped for a non-finite value (skip_batch)
    skipped = 0  # gradient steps of this process whose update was skipped
    progress = Clock(step, args.offline_steps)
    clock = loop.UpdateClock()
    labels = None  # the latest labels of a learner that labels the dataset (written at the end)
    ctrl_c = CtrlC(_log, "the current gradient step", args.save_model)
    try:
        with ctrl_c, Bar(args.offline_steps, initial=step, desc="offline training", unit="step") as bar:
            # the untrained policy's score (a resumed run was evaluated at its checkpoint's step, unless it had
            # finished)
            if marks["last_test"] is None or step >= args.offline_steps:
                with loop.stop_on_nonfinite(ctx, last_checkpoint, _log, causes):
                    evaluate(ctx, step, valid)
                labels = label(ctx, data, step, last_checkpoint, _log)
                marks["last_test"] = step
            while step < args.offline_steps and not ctrl_c.requested:  # Ctrl-C: stops after a whole step
                # in a fixed order, so that the sampler's random stream is reproducible
                with bad_data_named(ctx, step, last_checkpoint, _log):
                    batches = {name: draw(sampler, name, datasets[name], args) for name in sorted(learner.batches)}
                skips = guard.skips if guard is not None else 0
                with clock.update(), loop.stop_on_nonfinite(ctx, last_checkpoint, _log, causes):
                    learner.train(batches, step, step * per_step)
                skipped += guard is not None and guard.skips > skips
                step += 1
                bar.update_to(step)
                # evaluated before the summary, so that the summary at a step shows the test at that step
                if step - marks["last_test"] >= args.offline_test_interval or step >= args.offline_steps:
                    with loop.stop_on_nonfinite(ctx, last_checkpoint, _log, causes):
                        evaluate(ctx, step, valid)
                    labels = label(ctx, data, step, last_checkpoint, _log) or labels
                    marks["last_test"] = step
                    if learner.trains_actor:
                        bar.set_postfix(test_return=f"{logger.latest('test_return_mean', float('nan')):.4g}")
                if step - marks["last_log"] >= args.offline_log_interval or step == args.offline_steps:
                    logger.log_stat("episode", step * per_step, step)  # episodes sampled (info.json: episode)
                    logger.log_stat("updates_per_s", clock.rate(), step)
                    logger.print_recent_stats(step_label="gradient step", count_label="samples (episodes)",
                                              progress=progress.line(step, "gradient steps"))
                    marks["last_log"] = step
                if args.save_model and (step - marks["last_save"] >= args.offline_save_interval
                                        or step == args.offline_steps):
                    marks["last_save"] = step
                    last_checkpoint = save(ctx, step, sampler, marks, _log)
            # stopped by Ctrl-C: a checkpoint where the loop stopped, the intervals' schedule kept (marks)
            if ctrl_c.stops(finished=step >= args.offline_steps) and args.save_model and marks["last_save"] != step:
                save(ctx, step, sampler, marks, _log)
    except KeyboardInterrupt:  # a second Ctrl-C, or one not deferred
        interrupted(ctx, "gradient step", step, _log, at_once=ctrl_c.why_at_once())
        raise
    if ctrl_c.requested:
        interrupted(ctx, "gradient step", step, _log)
        loop.finish(ctx)
        raise ctrl_c.interrupt()
    check_skipped(ctx, skipped, clock.updates, causes, _log)
    _log.info(f"Finished offline training: {clock.updates} gradient steps ({clock.updates * per_step} sampled "
              f"episodes) in {progress.elapsed():.1f}s ({clock.rate():.1f} updates/s in the learner)")
    loop.log_final_evaluation(ctx, _log, "gradient step")
    try:
        if labels is not None:  # refused (a ranking of constant scores, labels written meanwhile): the run fails,
            write_labels(ctx, data, labels, fingerprint, step, _log)  # its labels being its product, but cleanly
    except BaseException:  # a refused ranking, labels written meanwhile, or the file itself failing (h5py's OSError)
        close_datasets(data, valid, expert)
        loop.finish_after_error(ctx, _log)
        raise
    close_datasets(data, valid, expert)
    loop.finish(ctx)


def close_datasets(*datasets):
    for d in datasets:
        if d is not None:
            d.close()


def leave_out_unread(args, learner, _log):
    """Data keys this learner never reads (its declarations: `batches`, `labels_at_end`, `reads_rewards`) are said, so
    that a run is not read as one that used them; a preference set or reward label is also left out of the run."""
    if learner.reads_rewards is None:
        raise TypeError(f"learner '{args.learner}' ({type(learner).__name__}) must declare reads_rewards (True or "
                        f"False: whether train reads the batches' reward; learners.base.OfflineLearner)")
    if args.offline_expert and "expert" not in learner.batches:
        _log.warning(f"offline_expert={args.offline_expert} is not used: learner '{args.learner}' trains on "
                     f"{' and '.join(sorted(learner.batches))} only (e.g. bc_beta=0), so this run is the same "
                     f"without it")
    if args.preference_set and "preferences" not in learner.batches and not learner.labels_at_end:
        _log.warning(f"preference_set={args.preference_set} is not used: learner '{args.learner}' does not train on "
                     f"preferences (omapl and marl_sl do); it is left out of this run")
        args.preference_set = None
    if args.offline_reward and not learner.reads_rewards:
        _log.warning(f"offline_reward={args.offline_reward} is not used: learner '{args.learner}' does not train on "
                     f"rewards (omar and omiga do); it is left out of this run")
        args.offline_reward = ""


SKIPPED_WARNING = 0.5  # more than this fraction of a run's updates skipped (on_nonfinite=skip_batch): a warning


def check_skipped(ctx, skipped, updates, causes, _log):
    """Updates skipped for a non-finite value (on_nonfinite=skip_batch), of the `updates` this process made: recorded
    in info.json (`nonfinite_skips`); more than half of them skipped is a warning (the run trained on the rest);
    all of them is an error: the run trained nothing, and its checkpoints hold the untrained model."""
    if not skipped:
        return
    ctx.run_info["nonfinite_skips"] = {"skipped": skipped, "updates": updates}
    what = (f"{skipped} of the {updates} gradient steps of this run skipped their update for a non-finite loss or "
            f"gradient norm (on_nonfinite=skip_batch)")
    if skipped >= updates:
        checkpoints = (f"its checkpoints in {ctx.args.model_dir} hold the model it resumed from or started with, "
                       f"untrained by this run" if ctx.args.save_model else "save_model=False: no checkpoints")
        error = UpdatesSkippedError(f"{what}: every update; the run trained nothing ({checkpoints}). Fix the cause "
                                    f"before training again: {causes}")
        _log.error(str(error))
        loop.finish_after_error(ctx, _log)
        raise error
    if skipped > SKIPPED_WARNING * updates:
        ctx.run_info["nonfinite_skips"]["warning"] = f"{what}: more than half"
        _log.warning(f"{what}: more than half, so the model trained on a fraction of the data it sampled; "
                     f"look for the cause: {causes}")


# settings that a loss divides by (a zero one makes it non-finite): OMIGA's and O-MAPL's omiga_alpha (its range,
# utils.config.RANGES, refuses 0 in a config; a value set in code is still named). Other weights may be 0 legitimately:
# cql_alpha=0 (OMAR without its CQL term), misodice_alpha=0 (MisoDICE divides by 1 + alpha), bc_beta=0.
DIVISORS = ("omiga_alpha",)


def nonfinite_causes(args, data):
    """Where a non-finite loss usually comes from, with this run's values: the data's magnitudes (the returns of
    what the learner trains on: a reward label's when offline_reward is set) and the settings that scale the losses
    (learning rates, the learner's alpha weights; a zero one that a loss divides by: DIVISORS)."""
    if args.offline_reward:
        returns, what = data.reward_returns(), f"the reward label's ({args.offline_reward}) episode returns"
    else:
        returns, what = data.returns, "the data's episode returns"
    largest = float(np.abs(returns).max()) if len(returns) else 0.0
    parts = [f"{what} span [{float(returns.min()):.4g}, {float(returns.max()):.4g}]"
             + (" (extreme: rescale the rewards, or drop the episodes)" if largest > 1e6 else "")]
    config = vars(args)
    keys = [k for k in sorted(config) if k in ("lr", "critic_lr") or (k.endswith("_alpha") and k != "optim_alpha")]
    values = [(k, config[k]) for k in keys if isinstance(config[k], (int, float)) and not isinstance(config[k], bool)]
    zero = [f"{k}=0" for k, v in values if v == 0 and k in DIVISORS]
    parts.append("settings " + ", ".join(f"{k}={v:g}" for k, v in values)
                 + (f" ({', '.join(zero)}: the loss divides by it)" if zero else "")
                 + " (a smaller lr often helps)")
    return "; ".join(parts)


@contextmanager
def bad_data_named(ctx, step, last_checkpoint, _log):
    """Around drawing a batch: bad data that a lazily loaded dataset finds in the episodes it reads (offline_lazy
    checks each read, not the whole file at the start) fails the run naming the gradient step, the last checkpoint
    and how to go on without the bad episodes."""
    try:
        yield
    except DatasetError as e:
        args = ctx.args
        then = (f"Last good checkpoint: {last_checkpoint}; after dropping the bad episodes into OUT.h5, resume from "
                f"it with: with checkpoint_path={args.model_dir} offline_dataset=OUT.h5 (the run then samples from the "
                f"remaining episodes)" if last_checkpoint else
                "No checkpoint was saved in this run (save_model=False or none yet): after dropping the bad episodes "
                "into OUT.h5, start again with offline_dataset=OUT.h5")
        error = DatasetError(f"{e}. Found at gradient step {step} (offline_lazy=True checks the episodes as it reads "
                             f"them; offline_lazy=False checks all at the start). {then}")
        _log.error(str(error))
        loop.finish_after_error(ctx, _log)
        raise error from e


def warn_large_batches(args, learner, datasets, _log):
    """Batches larger than what they are drawn from are drawn with replacement, each episode (or pair) many times
    over: legitimate for a small dataset, but costly and rarely meant when the batch is far larger; said once."""
    for name in sorted(learner.batches):
        source = datasets[name]
        key, size, unit = (("preference_batch_size", args.preference_batch_size, "labeled pairs")
                           if name == "preferences" else ("s0_batch_size", args.s0_batch_size, "episodes")
                           if name == "init" else ("batch_size", args.batch_size, "episodes"))
        if size > len(source):
            _log.warning(f"{key}={size} is more than the {len(source)} {unit} of the {name} batches: each batch "
                         f"draws them with replacement, every one about {size / len(source):.3g} times, and costs "
                         f"{size} where {len(source)} would see each once" if size >= 2 * len(source) else
                         f"{key}={size} is more than the {len(source)} {unit} of the {name} batches: each batch "
                         f"draws them with replacement")


def oracle_score(prefs, gamma):
    """(oracle_key, [E] scores) of the score the preference set's labels were judged by (its labeling settings:
    `oracle_key` and, for discounted_return, its gamma): the top-K ceiling of a learner that ranks episodes. Sets
    labeled before oracle_key was recorded were judged by the return."""
    key = prefs.settings.get("oracle_key", "return")
    return key, episode_scores(prefs.dataset, key, float(prefs.settings.get("gamma", gamma)))


def episodes_per_step(learner, args):
    """Episodes one update samples, as logged (`episode`): both episodes of each preference pair for learners on
    pairs, else batch_size (the main batch; BC(β)'s expert batch is not counted)."""
    return 2 * args.preference_batch_size if learner.needs("preferences") else args.batch_size


def batch_text(learner, args):
    parts = [f"{args.preference_batch_size} preference pairs" if name == "preferences" else
             f"{args.s0_batch_size} initial states (init)" if name == "init" else
             f"{args.batch_size} episodes ({name})" for name in sorted(learner.batches)]
    return ", ".join(parts)


def draw(sampler, name, source, args):
    """The batch `name` of one update: preference pairs (preference_batch_size of them) or episodes (batch_size)."""
    if name == "preferences":
        return sampler.pairs(source, args.preference_batch_size, args.device)
    if name == "init":
        return sampler.initial(source, args.s0_batch_size, args.device)
    return sampler.batch(source, args.batch_size, args.device)


def label(ctx, data, step, last_checkpoint, _log):
    """A labeling learner's labels of the whole dataset at `step` (its stats logged); None for other learners."""
    if not ctx.learner.labels_at_end:
        return None
    with loop.stop_on_nonfinite(ctx, last_checkpoint, _log):
        result = ctx.learner.label_dataset(data, step)
    for k, v in result["stats"].items():
        ctx.logger.log_stat(k, float(v), step)
    return result


def write_labels(ctx, data, result, fingerprint, step, _log):
    """The learner's last labels into the dataset file (labels/<name>, atomically, by the labeling store), their
    report into the run's info and the console."""
    args = ctx.args
    attrs = {"learner": args.learner, "config": args.name, "step": step, "seed": args.seed,
             "preference_set": args.preference_set, "sacred_run": ctx.sacred_run,
             # the set's version: labels of a set replaced later are refused (offline.label_store.stale_derivation)
             "preference_set_id": preference_set_id(data.path, args.preference_set) if args.preference_set else None,
             "model_dir": os.path.abspath(args.model_dir),  # a run resumed into this folder may replace them
             **result.get("attrs", {})}  # the learner's own (O-MAPL: rank_by)
    names = sorted(result["labels"])
    if result.get("refused"):  # a ranking that is only the tie rule's choice (constant scores): nothing written
        kept = (f"Checkpoints are kept in {args.model_dir} (the trained model and policy, the last at "
                f"{ctx.last_checkpoint}), and its final evaluation is logged" if ctx.last_checkpoint else
                "No checkpoint was saved (save_model=False); its final evaluation is logged")
        raise DatasetError(f"{args.learner}: no labels written ({', '.join(names)}): {result['refused']}. The model "
                           f"learned no ranking of the episodes at gradient step {step}; check the preference set "
                           f"(ties, labels) and the model's settings. The run fails, its labels being its product. "
                           f"{kept}")
    existing = [n for n in names if n in data.label_names]  # as loaded: a label written meanwhile is refused
    overwrite = args.label_overwrite or (bool(existing) and existing == own_labels(data, names, args.model_dir))
    try:
        path = write_episode_labels(data.path, result["labels"], attrs, fingerprint, overwrite=overwrite)
    except LabelExistsError as e:  # another run wrote labels of these names after this run's start check
        key = ctx.learner.label_name_key
        raise LabelExistsError(
            f"{data.path} got label(s) {names} from another run while this run trained (two runs on one set under "
            f"one label name?); nothing was written. {keep_note(ctx, step)}, adding label_overwrite=True (replaces "
            f"the other run's labels) or {key}=<another name>") from e
    except EpisodesChangedError as e:
        raise EpisodesChangedError(
            f"{data.path} changed while this run trained ({e}); nothing was written. Restore the dataset file this "
            f"run trained on, then write the labels: {keep_note(ctx, step)}") from e
    ctx.run_info["labels"] = {"path": path, "names": sorted(result["labels"]), **result["info"]}
    _log.info(f"Wrote labels {sorted(result['labels'])} into {path}" + (f": {result['summary']}"
                                                                         if result.get("summary") else ""))


def keep_note(ctx, step):
    """Where the trained model is kept and the command line that writes its labels without training again (a resume
    for no further steps labels the dataset from the checkpoint)."""
    last = ctx.last_checkpoint
    if not last:
        return "No checkpoint was saved (save_model=False), so the training must be run again"
    return (f"The trained model is kept: {last}. Write its labels without training again by resuming it: the same "
            f"command with checkpoint_path={os.path.dirname(last)} offline_steps={step}")


def evaluate(ctx, step, valid):
    """Test episodes at gradient step `step` (and the normalised score), and the learner's validation loss; a
    learner that trains no policy (`trains_actor` False) plays no test episodes."""
    args, runner, logger = ctx.args, ctx.runner, ctx.logger
    if ctx.learner.trains_actor:
        loop.sync_acting_mac(ctx)
        runner.t_env = step  # test statistics are logged at the current gradient step
        loop.run_test_episodes(ctx)
    returns = logger.stats.get("test_return_mean")
    if returns and args.reference_return_low is not None and args.reference_return_high is not None:
        low, high = float(args.reference_return_low), float(args.reference_return_high)
        if high == low:
            raise ValueError("reference_return_high must differ from reference_return_low")
        logger.log_stat("test_normalised_score", (returns[-1][1] - low) / (high - low), step)
    if valid is not None:
        rows = np.arange(min(len(valid), VALID_EPISODES))
        totals = {}
        for start in range(0, len(rows), args.batch_size):
            part = valid.episode_batch(rows[start:start + args.batch_size])
            part = part[:, : part.max_t_filled()]
            for k, v in ctx.learner.validation_loss(part.to(args.device) if args.device != "cpu" else part).items():
                totals[k] = totals.get(k, 0.0) + v * part.batch_size
        means = {k: v / len(rows) for k, v in totals.items()}
        for k, v in means.items():
            logger.log_stat(k, v, step)
        check_validation(ctx, means, step)


def check_validation(ctx, means, step):
    """Non-finite validation losses (held-out episodes) follow on_nonfinite as the training losses do: `stop` fails
    the run (NonFiniteError; the run loop names the checkpoint and the likely causes), `skip_batch` (there is no
    update to skip) warns, naming the stat and the step; the value is logged either way."""
    bad = {k: float(v) for k, v in means.items() if not np.isfinite(v)}
    if not bad:
        return
    args = ctx.args
    guard = getattr(ctx.learner, "guard", None)
    name = guard.learner if guard is not None else f"{type(ctx.learner).__name__} ({args.name})"
    what = (f"on the {args.offline_valid_fraction:g} of the episodes held out for validation (offline_valid_fraction; "
            f"the model's outputs overflow on data it does not train on)")
    if args.on_nonfinite == "stop":
        raise NonFiniteError(name, bad, step, "gradient step", what=f"stopped {what}")
    stats = ", ".join(f"{k} = {v}" for k, v in bad.items())
    get_logger().warning(f"{name}: non-finite validation loss {stats} at gradient step {step} {what}; "
                         f"on_nonfinite=skip_batch: training goes on (on_nonfinite=stop would stop the run here)")


def save(ctx, step, sampler, marks, _log):
    """A checkpoint at gradient step `step`: the learner, the sampler's state and the steps of the latest test, log
    and save (`marks`, so that a resumed run keeps their schedule); returns its folder."""
    return loop.save(ctx, step, {"step": step, "sampler": sampler.rng.bit_generator.state, "marks": dict(marks),
                                 "datasets": saved_fingerprints(ctx), "env_rng": loop.env_rng_states(ctx, _log)},
                     _log)


def read_names(args):
    """The labels and preference sets of the dataset that this run reads (keys as in the file: 'preferences/<name>',
    'labels/<name>'): preference_set (O-MAPL, MARL-SL), offline_reward=label:<name>, offline_expert=label:<name> or
    top:<name>:<K>."""
    names = [f"preferences/{args.preference_set}"] if args.preference_set else []
    for spec in (args.offline_reward or "", args.offline_expert or ""):
        if spec.startswith(LABEL_PREFIX):
            names.append(f"labels/{spec[len(LABEL_PREFIX):]}")
        elif spec.startswith(TOP_PREFIX):
            names.append(f"labels/{parse_top(spec)[0]}")
    return sorted(set(names))


def record_reads(fingerprints, args):
    """Each dataset file's fingerprint gets `reads`: {'labels/<name>' or 'preferences/<name>': its version id
    (offline.label_store.label_id, preference_set_id)} of those this run reads that the file holds, as loaded at the
    run's start; check_datasets compares them on resume."""
    names = read_names(args)
    main = {os.path.abspath(p) for p in dataset_paths(args.offline_dataset)}
    for fp in fingerprints:
        if fp["path"] not in main:
            continue  # a separate expert file: its episodes are read, not its labels
        reads = {}
        for key in names:
            where, name = key.split("/", 1)
            version = preference_set_id(fp["path"], name) if where == "preferences" else label_id(fp["path"], name)
            if version is not None:
                reads[key] = version
        fp["reads"] = reads


def saved_fingerprints(ctx):
    """The run's dataset fingerprints with each file's content fingerprint (its episodes, not its labels or
    preference sets: offline.label_store.content_fingerprint), computed at the first checkpoint, for check_datasets.
    With offline_lazy too: a streaming pass in blocks of episodes (about 0.1 s for the 1,200 episodes of a 1.4 MB
    LBF file), so that labels written into the file later (this pipeline's own) do not refuse a resume. None for a
    file with invalid episodes (the reader refuses them): a resume then compares the file's bytes only."""
    for fp in ctx.dataset_fingerprints:
        if "content" not in fp:
            try:
                fp["content"] = content_fingerprint(fp["path"])
            except DatasetError:
                fp["content"] = None
    return ctx.dataset_fingerprints


def check_datasets(ctx, saved, path, _log):
    """A resumed run refuses a dataset file that changed on disk since its checkpoint in what the run reads: other
    episodes, or another version of a label or preference set the run reads (`reads`: replaced with
    label_overwrite=True); it would continue on other data than the run it continues. A file with the same episodes
    and the same labels and sets read (others added: this pipeline's own labels) is fine, and so is another path
    (said as a changed setting). `saved`: the checkpoint's fingerprints (None for checkpoints from before they were
    saved: not checked). offline_resume_changed_data=True resumes anyway, recorded in info.json."""
    now = {fp["path"]: fp for fp in ctx.dataset_fingerprints}
    for old in saved or []:
        new = now.get(old["path"])
        if new is None or new["sha256"] == old["sha256"]:
            continue
        changed = []
        if old.get("content") and content_fingerprint(old["path"]) == old["content"]:
            then, current = old.get("reads") or {}, new.get("reads") or {}
            changed = sorted(k for k in then if k in current and current[k] != then[k])
            if not changed:
                _log.info(f"{old['path']} changed on disk since the checkpoint, but holds the same episodes"
                          + (f" and the same {', '.join(sorted(then))} this run reads" if then else "")
                          + " (labels or preference sets written since): resuming")
                continue
            what = (f"{old['path']}: {', '.join(changed)}, which this run reads, changed since the checkpoint {path} "
                    f"was saved (replaced, e.g. with label_overwrite=True; the episodes are the same)")
            consequence = "the resumed run would train on other labels than the run it continues"
        elif not old.get("content"):  # checkpoints of older versions under offline_lazy, or invalid episodes
            what = (f"{old['path']} changed on disk since the checkpoint {path} was saved: the file's bytes differ "
                    f"(SHA-256 {old['sha256'][:12]}... then, {new['sha256'][:12]}... now; {old['episodes']} episodes "
                    f"then, {new['episodes']} now), and the checkpoint records no fingerprint of its episodes, so "
                    f"they are not compared (if only labels were added, the data is the same)")
            consequence = "the resumed run may train on other data than the run it continues"
        else:
            what = (f"{old['path']} changed on disk since the checkpoint {path} was saved (SHA-256 "
                    f"{old['sha256'][:12]}... then, {new['sha256'][:12]}... now; {old['episodes']} episodes then, "
                    f"{new['episodes']} now)")
            consequence = "the resumed run would train on other data than the run it continues"
        if ctx.args.offline_resume_changed_data:
            _log.warning(f"{what}: resuming on the changed file (offline_resume_changed_data=True)")
            ctx.run_info.setdefault("resumed_from", {}).setdefault("changed_datasets", []).append(
                {"path": old["path"], "sha256_then": old["sha256"], "sha256_now": new["sha256"],
                 **({"changed": changed} if changed else {})})
            continue
        raise ConfigError(f"{what}: {consequence}. Restore the file, start a new run (leave out checkpoint_path), or "
                          f"resume on the changed file with offline_resume_changed_data=True")


def resume(ctx, sampler, _log):
    """Load the checkpoint at checkpoint_path with its RNG and sampler states; returns (its gradient step, its
    folder, the steps of the latest test, log and save: the checkpoint's, or its own step for a checkpoint saved
    before they were recorded)."""
    path = loop.load(ctx)
    _log.info(f"Resuming offline training from {path}")
    state = loop.resume_state(path, ctx)
    if state is None or "sampler" not in state:
        raise ValueError(f"{path} is not an offline-training checkpoint (no sampler state); to start offline "
                         f"training from online weights, train online and collect a dataset instead")
    check_datasets(ctx, state.get("datasets"), path, _log)
    sampler.rng.bit_generator.state = state["sampler"]
    loop.restore_env_rngs(ctx.runner, state, _log)  # its test episodes continue as the uninterrupted run's
    step = state["step"]
    return step, path, state.get("marks") or {"last_test": step, "last_log": step, "last_save": step}
