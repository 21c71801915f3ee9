"""Offline training (`run: offline`): a learner trained for `offline_steps` gradient steps on a fixed HDF5
dataset, evaluated with `test_nepisode` greedy online episodes every `offline_test_interval` steps.

    python src/main.py --config=bc --env-config=lbf_8x8_2p_2f_coop with offline_dataset=results/datasets/...h5

Logging is the online runs' (Sacred info/metrics, TensorBoard, console) with the gradient step as the x axis
(`t_env` in the logs); checkpoints go to results/models/<run>/<step>/ and `checkpoint_path` resumes a run.
With reference_return_low/high set, `test_normalised_score` = (R - low) / (high - low) is logged too.
"""
import os

import numpy as np

from labeling.trajectory_preference import episode_scores
from learners.episode_ranking import own_labels
from offline.format import DatasetError
from offline.label_store import (
    EpisodesChangedError,
    LabelExistsError,
    content_fingerprint,
    preference_set_id,
    write_episode_labels,
)
from offline.preferences import check_stored_view, load_preferences
from offline.reader import dataset_fingerprint
from offline.sampling import Sampler, dataset_paths, load_training_data
from run import loop
from run.interrupt import CtrlC, interrupted
from run.setup import build
from utils.files import clean_stale_temps
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
        warning = datasets["preferences"].incomplete()
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
    # the labels are written for the episodes as they are now (refused at the end if the file changed meanwhile)
    fingerprint = content_fingerprint(data) if learner.labels_at_end else None
    if _run is not None:
        paths = dataset_paths(args.offline_dataset)
        if args.offline_expert and not args.offline_expert.startswith(("quality:", "label:", "top:")):
            paths.append(args.offline_expert)
        _run.info["dataset"] = {"episodes": len(data), "mean_return": float(data.returns.mean()),
                                "paths": dataset_paths(args.offline_dataset),
                                "expert_episodes": len(expert) if expert is not None else 0,
                                # path, bytes, SHA-256 of the file, episodes, created: of every file read
                                "fingerprints": [dataset_fingerprint(p) for p in paths]}
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
    progress = Clock(step, args.offline_steps)
    clock = loop.UpdateClock()
    labels = None  # the latest labels of a learner that labels the dataset (written at the end)
    ctrl_c = CtrlC(_log, "the current gradient step", args.save_model)
    try:
        with ctrl_c, Bar(args.offline_steps, initial=step, desc="offline training", unit="step") as bar:
            # the untrained policy's score (a resumed run was evaluated at its checkpoint's step, unless it had
            # finished)
            if marks["last_test"] is None or step >= args.offline_steps:
                evaluate(ctx, step, valid)
                labels = label(ctx, data, step, last_checkpoint, _log)
                marks["last_test"] = step
            while step < args.offline_steps and not ctrl_c.requested:  # Ctrl-C: stops after a whole step
                # in a fixed order, so that the sampler's random stream is reproducible
                batches = {name: draw(sampler, name, datasets[name], args) for name in sorted(learner.batches)}
                with clock.update(), loop.stop_on_nonfinite(ctx, last_checkpoint, _log):
                    learner.train(batches, step, step * per_step)
                step += 1
                bar.update_to(step)
                # evaluated before the summary, so that the summary at a step shows the test at that step
                if step - marks["last_test"] >= args.offline_test_interval or step >= args.offline_steps:
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
        raise KeyboardInterrupt
    _log.info(f"Finished offline training: {clock.updates} gradient steps ({clock.updates * per_step} sampled "
              f"episodes) in {progress.elapsed():.1f}s ({clock.rate():.1f} updates/s in the learner)")
    loop.log_final_evaluation(ctx, _log, "gradient step")
    if labels is not None:
        write_labels(ctx, data, labels, fingerprint, step, _log)
    for d in (data, valid, expert):
        if d is not None:
            d.close()
    loop.finish(ctx)


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
        raise DatasetError(f"{args.learner}: no labels written ({', '.join(names)}): {result['refused']}. The model "
                           f"learned no ranking of the episodes at gradient step {step}; check the preference set "
                           f"(ties, labels) and the model's settings. Checkpoints are kept in {args.model_dir}")
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
        for k, v in totals.items():
            logger.log_stat(k, v / len(rows), step)


def save(ctx, step, sampler, marks, _log):
    """A checkpoint at gradient step `step`: the learner, the sampler's state and the steps of the latest test, log
    and save (`marks`, so that a resumed run keeps their schedule); returns its folder."""
    return loop.save(ctx, step, {"step": step, "sampler": sampler.rng.bit_generator.state, "marks": dict(marks)},
                     _log)


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
    sampler.rng.bit_generator.state = state["sampler"]
    step = state["step"]
    return step, path, state.get("marks") or {"last_test": step, "last_log": step, "last_save": step}
