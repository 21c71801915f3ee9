"""Online training (the default run mode): pymarl's run_sequential loop, resumable."""
import os
import time

from learners.common import NonFiniteError
from run.setup import build
from utils.checkpoint import find_checkpoint, load_run_state, save_checkpoint, save_run_config
from utils.files import clean_stale_temps
from utils.seeding import rng_state, set_rng_state


def time_str(seconds):
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    return (f"{days} days, " if days else "") + f"{hours:d}:{minutes:02d}:{secs:02d}"


class Loop:
    """Counters of the training loop; saved in checkpoints so a resumed run continues where it stopped."""

    def __init__(self, args):
        self.episode = 0
        self.last_test_T = -args.test_interval - 1
        self.last_log_T = 0
        self.model_save_time = 0
        self.n_updates = 0
        self.fresh_episodes = 0  # episodes collected since the last update (on-policy learners)

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


def run_online(_run, config, _log):
    ctx = build(_run, config, _log)
    try:
        return _train(ctx, _log)
    finally:  # the TFCAF worker ends with the run, whatever ended it (its cost is recorded in info.json)
        for provider in ctx.features:
            provider.close()


def _train(ctx, _log):
    clean_stale_temps(ctx.args.results_dir, depth=4)  # delete the litter of earlier runs killed mid-write
    args, runner, learner, logger = ctx.args, ctx.runner, ctx.learner, ctx.logger

    loop = Loop(args)
    last_checkpoint = None  # the newest checkpoint this run saved or resumed from: named if training blows up
    if args.checkpoint_path:
        last_checkpoint = resume(ctx, loop, _log)

    _log.info(f"Beginning training for {args.t_max} timesteps")
    start_time = last_time = time.time()
    start_T = runner.t_env
    train_time = 0.0
    n_test_runs = max(1, args.test_nepisode // runner.batch_size)
    while runner.t_env <= args.t_max:
        episode_batch = ctx.annotate(runner.run(test_mode=False), runner.t_env)
        ctx.buffer.insert_episode_batch(episode_batch)
        loop.fresh_episodes += episode_batch.batch_size

        trained = False
        for _ in range(args.updates_per_rollout):
            if not ctx.buffer.can_sample(args.batch_size):
                break
            # on-policy learners train once per batch_size new episodes, never on stale ones
            if learner.on_policy and loop.fresh_episodes < args.batch_size:
                break
            t0 = time.perf_counter()
            if learner.on_policy:
                sample = ctx.buffer.latest(args.batch_size)
                loop.fresh_episodes = 0
            else:
                sample = ctx.buffer.sample(args.batch_size)
            sample = sample[:, : sample.max_t_filled()]
            if sample.device != args.device:
                sample.to(args.device)
            try:
                learner.train(sample, runner.t_env, loop.episode)
            except NonFiniteError as e:
                stop_nonfinite(ctx, e, last_checkpoint, _log)
                raise  # nothing after a non-finite value is saved
            train_time += time.perf_counter() - t0
            loop.n_updates += 1
            trained = True
        if trained and ctx.acting_mac is not ctx.mac:
            ctx.acting_mac.load_state(ctx.mac)

        if (runner.t_env - loop.last_test_T) / args.test_interval >= 1.0:
            _log.info(f"t_env: {runner.t_env} / {args.t_max}")
            elapsed = time.time() - last_time
            done = max(runner.t_env - start_T, 1)
            left = (args.t_max - runner.t_env) / done * (time.time() - start_time)
            _log.info(f"Estimated time left: {time_str(left)}. Time passed: {time_str(time.time() - start_time)}"
                      f" (last interval {elapsed:.1f}s)")
            last_time = time.time()
            loop.last_test_T = runner.t_env
            for _ in range(n_test_runs):
                runner.run(test_mode=True)

        loop.episode += args.batch_size_run
        if args.save_model and (runner.t_env - loop.model_save_time >= args.save_model_interval
                                or loop.model_save_time == 0):
            loop.model_save_time = runner.t_env
            last_checkpoint = save(ctx, loop, _log)

        if runner.t_env - loop.last_log_T >= args.log_interval:
            logger.log_stat("episode", loop.episode, runner.t_env)
            if train_time > 0:
                logger.log_stat("updates_per_s", loop.n_updates / train_time, runner.t_env)
            logger.print_recent_stats()
            loop.last_log_T = runner.t_env

    if args.save_model and loop.model_save_time != runner.t_env:
        loop.model_save_time = runner.t_env
        save(ctx, loop, _log)
    total = time.time() - start_time
    _log.info(f"Finished training: {runner.t_env - start_T} env steps in {total:.1f}s "
              f"({(runner.t_env - start_T) / max(total, 1e-9):.0f} env steps/s, {loop.n_updates} updates)")
    runner.close_env()
    logger.finish()


def stop_nonfinite(ctx, error, last_checkpoint, _log):
    """Name the last good checkpoint in the error (the learner cannot know it) and release the envs."""
    error.checkpoint = (f"Last good checkpoint: {last_checkpoint}" if last_checkpoint else
                        "No checkpoint was saved in this run (save_model=False or none yet)")
    _log.error(str(error))
    try:
        ctx.runner.close_env()
        ctx.logger.finish()
    except Exception as cleanup:  # the non-finite error is the one to report
        _log.warning(f"cleanup after the non-finite error failed: {cleanup!r}")


def save(ctx, loop, _log):
    args, runner = ctx.args, ctx.runner
    path = os.path.join(args.results_dir, "models", args.unique_token, str(runner.t_env))
    run_state = {"t_env": runner.t_env, "loop": loop.state_dict(), "rng": rng_state(),
                 "runner_log_train_stats_t": runner.stats.log_train_stats_t}
    if args.save_replay_buffer:
        run_state["buffer"] = ctx.buffer.state_dict()
    save_checkpoint(ctx.learner, path, run_state)
    save_run_config(os.path.dirname(path), ctx.config)
    _log.info(f"Saved checkpoint to {path}")
    return path


def resume(ctx, loop, _log):
    """Load the checkpoint at args.checkpoint_path; returns its folder."""
    args, runner = ctx.args, ctx.runner
    path = find_checkpoint(args.checkpoint_path, args.load_step)
    _log.info(f"Resuming from {path}")
    ctx.learner.load_models(path)
    if ctx.acting_mac is not ctx.mac:
        ctx.acting_mac.load_state(ctx.mac)
    state = load_run_state(path)
    if state is None:
        # a pymarl-style checkpoint (weights only): continue from the folder's t_env
        runner.t_env = int(os.path.basename(os.path.normpath(path)))
        _log.warning("checkpoint has no run_state.th: counters and RNG start fresh from its t_env")
        return path
    runner.t_env = state["t_env"]
    loop.load_state_dict(state["loop"])
    runner.stats.log_train_stats_t = state["runner_log_train_stats_t"]
    set_rng_state(state["rng"])
    if "buffer" in state:
        ctx.buffer.load_state_dict(state["buffer"])
        refill_fields(ctx, _log)
    elif ctx.args.buffer_size > ctx.args.batch_size:
        _log.warning("checkpoint has no replay buffer (save_replay_buffer=False): it refills from new episodes")
    return path


def refill_fields(ctx, _log, chunk=32):
    """Recompute the declared batch fields (e.g. the TFCAF's weights) of the episodes a checkpoint's buffer brought
    back: a buffer saved by another version, or before the run used them, would otherwise hold zeros there."""
    n = ctx.buffer.episodes_in_buffer
    if not ctx.features or n == 0:
        return
    for start in range(0, n, chunk):
        for provider in ctx.features:
            provider.annotate(ctx.buffer[start:min(n, start + chunk)])
    _log.info(f"recomputed the batch fields of the {n} episodes restored into the replay buffer")
