"""What the run modes (online, offline, evaluate) share: checkpoints (save, load, resume), test episodes, timing,
stopping on a non-finite value and the end of a run."""
import json
import os
import time
from contextlib import contextmanager

from envs.rng import not_exact
from learners.common import NonFiniteError
from utils.checkpoint import (
    ENV_SHAPE_KEYS,
    CheckpointError,
    CheckpointMismatch,
    changed_settings,
    check_checkpoint_config,
    find_checkpoint,
    load_mismatch_hint,
    load_run_config,
    load_run_state,
    save_checkpoint,
    save_run_config,
)
from utils.files import FolderLock
from utils.logging import get_logger
from utils.progress import Bar, time_str  # noqa: F401 (time_str re-exported)
from utils.seeding import rng_state, set_rng_state


class UpdateClock:
    """Learner time and updates in this process, for `updates_per_s`."""

    def __init__(self):
        self.seconds, self.updates = 0.0, 0

    @contextmanager
    def update(self):
        t0 = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - t0
        self.updates += 1

    def rate(self):
        return self.updates / max(self.seconds, 1e-9)


def sync_acting_mac(ctx):
    """With a GPU learner the CPU acting copy is refreshed from the learner's mac before it acts."""
    if ctx.acting_mac is not ctx.mac:
        ctx.acting_mac.load_state(ctx.mac)


def run_test_episodes(ctx, bar=False):
    """`test_nepisode` test episodes (acting as test_policy says), logged by the runner at runner.t_env; returns the
    number of runs.
    bar=True: a progress bar over the episodes (on a terminal; for evaluation runs, not the tests within training)."""
    n_runs = max(1, ctx.args.test_nepisode // ctx.runner.batch_size)
    with Bar(n_runs * ctx.runner.batch_size, desc="evaluating", unit="episode", enabled=None if bar else False) as b:
        for _ in range(n_runs):
            ctx.runner.run(test_mode=True)
            b.update(ctx.runner.batch_size)
    return n_runs


FINAL_STATS = ("test_return_mean", "test_return_std", "test_normalised_score", "test_ep_length_mean")


def test_policy(args):
    """How test episodes act, for the console: greedy, sampled from the policy, or epsilon-greedy."""
    if args.action_selector == "epsilon_greedy":
        return f"epsilon-greedy ({args.evaluation_epsilon:g})" if args.evaluation_epsilon else "greedy"
    return "greedy" if args.test_greedy else "sampled"


def log_final_evaluation(ctx, _log, step_label="t_env", end=None, interval=None):
    """The run's last evaluation (the latest test stats and the step they were logged at), printed at its end.
    end: the run's last step; when the latest evaluation came before it (the test interval did not come round
    again), the line says "Latest evaluation" and where the run ended, so no one reads it as the end's."""
    logger = ctx.logger
    rows = [(k, logger.stats[k][-1]) for k in FINAL_STATS if logger.stats.get(k)]
    if not rows:
        return
    step = rows[0][1][0]
    # then the env's own test means of that evaluation (SMAX: test_battle_won_mean), which sweeps/reevaluate.py
    # reads from this line too
    rows += [(k, v[-1]) for k, v in sorted(logger.stats.items())
             if k.startswith("test_") and k.endswith("_mean") and k not in FINAL_STATS and v and v[-1][0] == step]
    title = "Final evaluation" if end is None or step >= end else (
        f"Latest evaluation (the run ended at {step_label} {end}, less than the test interval {interval} after it)")
    _log.info(f"{title} ({step_label} {step}, {ctx.args.test_nepisode} {test_policy(ctx.args)} episodes): "
              + ", ".join(f"{k} {v:.4f}" for k, (_, v) in rows))


# ----- checkpoints: results/models/<run>/<step>/ -----
def save(ctx, step, run_state, _log, buffer=None):
    """The learner's files and `run_state` (plus the RNG states and the Sacred run saving it) at `step` in the run's
    model folder (args.model_dir: a resumed run's is the one it continues); returns the folder. The folder's
    config.json (written once, by the run that started it) holds the config and the env's shapes."""
    run_dir = ctx.args.model_dir
    if ctx.model_lock is None:  # from the first checkpoint on, a resume elsewhere must not write here too
        ctx.model_lock = FolderLock.try_acquire(run_dir)
    path = os.path.join(run_dir, str(step))
    # the shaper's provenance (e.g. its potential's SHA-256): a resumed run refuses another shaper (resume_state)
    shaper = getattr(ctx, "shaper", None)
    run_state = {**run_state, **({} if shaper is None else {"shaper": shaper.provenance()})}
    # the config that trained up to this checkpoint (plain values), which a resumed run compares its own with
    config = json.loads(json.dumps(ctx.config, default=str))
    save_checkpoint(ctx.learner, path, {**run_state, "rng": rng_state(), "sacred_run": ctx.sacred_run,
                                        "config": config},
                    buffer=buffer)  # the replay buffer's state: kept in the latest checkpoint only
    save_run_config(run_dir, {**ctx.config, **{k: getattr(ctx.args, k) for k in ENV_SHAPE_KEYS}})
    _log.info(f"Saved checkpoint to {path}")
    ctx.last_checkpoint = path
    flush = getattr(ctx, "flush_records", None)
    if flush is not None:  # metrics.json / info.json cover every step up to the checkpoint a resume starts from
        flush()
    return path


def load(ctx, evaluate=False):
    """Load the checkpoint at checkpoint_path (load_step) into the learner and the acting mac; returns its folder.
    evaluate=True: the actor only. The checkpoint's config.json is checked against this run's algorithm and network
    shapes first: a mismatch is named (CheckpointError), not left to torch's missing or mis-sized keys."""
    args = ctx.args
    check_checkpoint_config(args.checkpoint_path, args.load_step, vars(args), evaluate=evaluate)
    path = find_checkpoint(args.checkpoint_path, args.load_step)
    try:
        ctx.learner.load_models(path, evaluate=evaluate)
    except RuntimeError as e:
        if "loading state_dict" not in str(e):
            raise
        raise CheckpointError(f"cannot load {path} into this run's networks: "
                              f"{load_mismatch_hint(args.checkpoint_path, vars(args))} "
                              f"(torch: {str(e).splitlines()[0]})") from e
    sync_acting_mac(ctx)
    return path


def resume_state(path, ctx=None):
    """The run state saved with a checkpoint, with the RNG states restored; None for a weights-only (pymarl-style)
    checkpoint. With `ctx`: the run's info `resumed_from` gains the checkpoint's step and the Sacred run that saved
    it, and the run's shaper checks the one the checkpoint recorded (`check_resume`: a changed shaper, e.g. another
    potential file, is refused; a checkpoint written before shapers recorded themselves is accepted)."""
    state = load_run_state(path)
    shaper = getattr(ctx, "shaper", None)
    if state is not None and shaper is not None:
        try:
            shaper.check_resume(state.get("shaper"))
        except ValueError as e:  # a config error: the run fails without litter
            raise CheckpointMismatch(f"{path}: {e}") from e
    if state is not None:
        set_rng_state(state["rng"])
        if ctx is not None and "resumed_from" in ctx.run_info:
            ctx.run_info["resumed_from"].update(step=state.get("t_env", state.get("step")),
                                                sacred_run=state.get("sacred_run"))
    if ctx is not None:
        log_changed_settings(ctx, state.get("config") if state else None, path)
    return state


def log_changed_settings(ctx, saved, path):
    """Say (a warning, and `resumed_from.changed` in info.json) which settings the resumed run changes versus the
    config that trained the checkpoint (its run_state's, else its model folder's config.json)."""
    saved = saved or load_run_config(os.path.dirname(os.path.normpath(path)))
    if not saved:
        return {}
    changed = changed_settings(saved, ctx.config)
    if changed:
        if "resumed_from" in ctx.run_info:
            ctx.run_info["resumed_from"]["changed"] = changed
        get_logger().warning(
            "Resuming with settings changed from the checkpoint's: "
            + ", ".join(f"{k} {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changed.items()))
    return changed


@contextmanager
def stop_on_nonfinite(ctx, last_checkpoint, _log, causes=None):
    """Around learner.train: on a non-finite value name the last good checkpoint in the error (the learner cannot
    know it) and the likely `causes` (text) when given, and release the envs; nothing after a non-finite value is
    saved."""
    try:
        yield
    except NonFiniteError as error:
        error.checkpoint = last_checkpoint_text(last_checkpoint)
        error.causes = causes
        _log.error(str(error))
        finish_after_error(ctx, _log)
        raise


def last_checkpoint_text(last_checkpoint):
    return (f"Last good checkpoint: {last_checkpoint}" if last_checkpoint else
            "No checkpoint was saved in this run (save_model=False or none yet)")


def finish_after_error(ctx, _log):
    """Release the envs and close the logger of a run that fails; the error being raised is the one to report."""
    try:
        finish(ctx)
    except Exception as cleanup:
        _log.warning(f"cleanup after the error failed: {cleanup!r}")


def finish(ctx):
    ctx.runner.close_env()
    ctx.logger.finish()
    if ctx.model_lock is not None:
        ctx.model_lock.release()


def env_rng_states(ctx, _log):
    """The envs' RNG states for a checkpoint (online and offline: offline runs test on the runner's envs), taken
    where save() takes the python/numpy/torch ones: after the rollout and test before it. An env that cannot save
    its state (or saves only part of it) is named once per run."""
    states = ctx.runner.env_rng_states()
    why = next(filter(None, map(not_exact, states)), None)
    if why and not ctx.env_rng_warned:
        _log.warning(f"{why}: a run resumed from this run's checkpoints plays other episodes than this run would")
        ctx.env_rng_warned = True
    return states


def restore_env_rngs(runner, state, _log):
    """The envs' RNG states from a checkpoint's run state; one warning where the episodes after the resume will
    differ from the uninterrupted run's (a checkpoint from before env RNG states were saved, on an env that has
    randomness; an env that cannot save or restore its state; another number of envs)."""
    if "env_rng" not in state:
        if any(s is not None for s in runner.env_rng_states()):  # a deterministic env (matrix game) loses nothing
            _log.warning("checkpoint holds no env RNG states (written before checkpoints saved them): the envs "
                         "restart their RNGs from the run's seed, so on a stochastic env the episodes after the "
                         "resume differ from those of the uninterrupted run")
        return
    why = runner.set_env_rng_states(state["env_rng"])
    if why:
        _log.warning(f"{why}: the episodes after the resume differ from those of the uninterrupted run")
