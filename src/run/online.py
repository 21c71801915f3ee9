"""Online training (the default run mode): pymarl's run_sequential loop, resumable."""
from run import loop
from run.interrupt import CtrlC, interrupted
from run.setup import build
from utils.checkpoint import BUFFER, folder_step, load_buffer
from utils.files import clean_stale_temps
from utils.progress import Bar, Clock


class Counters:
    """Counters of the training loop; saved in checkpoints so a resumed run continues where it stopped."""

    def __init__(self, args):
        self.episode = 0
        self.last_test_T = -args.test_interval - 1
        # a summary at the first episode too: in step with the runner's and the test's stats (each logged then
        # and every interval after), so that a summary shows the values logged at its step, not an interval ago
        self.last_log_T = -args.log_interval - 1
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
    args, runner, learner = ctx.args, ctx.runner, ctx.learner
    if not learner.uses_replay_buffer:
        raise ValueError(f"learner '{args.learner}' trains from datasets, not from its own rollouts: use run: offline "
                         f"(its config, --config={args.name}, sets it unless overridden)")

    counters = Counters(args)
    last_checkpoint = None  # the newest checkpoint this run saved or resumed from: named if training blows up
    if args.checkpoint_path:
        last_checkpoint = ctx.last_checkpoint = resume(ctx, counters, _log)
    start_updates = counters.n_updates  # the end's summary counts this session's work

    if args.save_model and args.save_replay_buffer:
        _log.info(f"save_replay_buffer=True: the replay buffer (up to {args.buffer_size} episodes) is saved with the "
                  f"latest checkpoint only ({BUFFER}); an older checkpoint drops its copy once a newer one is written")
    if args.checkpoint_path:
        where = f"checkpoints go to {args.model_dir}" if args.save_model else "save_model=False: no checkpoints"
        _log.info(f"Resuming at t_env {runner.t_env} of {args.t_max} (seed {args.seed}; {where})")
    else:
        _log.info(f"Beginning training for {args.t_max} timesteps")
    progress = Clock(runner.t_env, args.t_max)
    clock = loop.UpdateClock()
    ctrl_c = CtrlC(_log, "the current rollout and its updates", args.save_model)
    try:
        with ctrl_c, Bar(args.t_max, initial=runner.t_env, desc="training", unit="step") as bar:
            _loop(ctx, counters, progress, clock, bar, last_checkpoint, ctrl_c, _log)
            # stopped by Ctrl-C at the end of an iteration, where an interval checkpoint would be saved: one is saved
            # there, leaving the interval checkpoints' schedule (model_save_time) as it was
            if ctrl_c.stops(finished=runner.t_env > args.t_max) and args.save_model \
                    and counters.model_save_time != runner.t_env:
                save(ctx, counters, _log)
    except KeyboardInterrupt:  # a second Ctrl-C, or one not deferred
        interrupted(ctx, "t_env", runner.t_env, _log, at_once=ctrl_c.why_at_once())
        raise
    if ctrl_c.requested:
        interrupted(ctx, "t_env", runner.t_env, _log)
        loop.finish(ctx)
        raise ctrl_c.interrupt()

    if args.save_model and counters.model_save_time != runner.t_env:
        counters.model_save_time = runner.t_env
        save(ctx, counters, _log)
    ctx.run_info["t_env_end"] = runner.t_env  # its logged series stop at the last log interval, before this
    steps, total = runner.t_env - progress.start, progress.elapsed()
    updates = counters.n_updates - start_updates
    since = (f"; the run is at t_env {runner.t_env} with {counters.n_updates} updates since it began"
             if progress.start else "")
    _log.info(f"Finished training: {steps} env steps and {updates} updates in {total:.1f}s "
              f"({steps / max(total, 1e-9):.0f} env steps/s{since})")
    loop.log_final_evaluation(ctx, _log, "t_env", end=runner.t_env, interval=args.test_interval)
    loop.finish(ctx)


def _loop(ctx, counters, progress, clock, bar, last_checkpoint, ctrl_c, _log):
    args, runner, learner, logger = ctx.args, ctx.runner, ctx.learner, ctx.logger
    while runner.t_env <= args.t_max:
        episode_batch = ctx.annotate(runner.run(test_mode=False), runner.t_env)
        ctx.buffer.insert_episode_batch(episode_batch)
        counters.fresh_episodes += episode_batch.batch_size

        trained = False
        for _ in range(args.updates_per_rollout):
            if not ctx.buffer.can_sample(args.batch_size):
                break
            # on-policy learners train once per batch_size new episodes, never on stale ones
            if learner.on_policy and counters.fresh_episodes < args.batch_size:
                break
            with clock.update():
                if learner.on_policy:
                    sample = ctx.buffer.latest(args.batch_size)
                    counters.fresh_episodes = 0
                else:
                    sample = ctx.buffer.sample(args.batch_size)
                sample = sample[:, : sample.max_t_filled()]
                if sample.device != args.device:
                    sample.to(args.device)
                with loop.stop_on_nonfinite(ctx, last_checkpoint, _log):
                    learner.train(sample, runner.t_env, counters.episode)
            counters.n_updates += 1
            trained = True
        if trained:
            loop.sync_acting_mac(ctx)

        bar.update_to(min(runner.t_env, args.t_max))
        if (runner.t_env - counters.last_test_T) / args.test_interval >= 1.0:
            counters.last_test_T = runner.t_env
            loop.run_test_episodes(ctx)
            bar.set_postfix(test_return=f"{logger.latest('test_return_mean', float('nan')):.4g}")

        counters.episode += args.batch_size_run
        # the summary before the checkpoint, whose counters then include it
        if runner.t_env - counters.last_log_T >= args.log_interval:
            logger.log_stat("episode", counters.episode, runner.t_env)
            if clock.updates:
                logger.log_stat("updates_per_s", clock.rate(), runner.t_env)
            logger.print_recent_stats(progress=progress.line(runner.t_env, "env steps"))
            counters.last_log_T = runner.t_env

        if args.save_model and (runner.t_env - counters.model_save_time >= args.save_model_interval
                                or counters.model_save_time == 0):
            counters.model_save_time = runner.t_env
            last_checkpoint = save(ctx, counters, _log)
        if ctrl_c.requested:  # the safe point: nothing of this iteration is left undone
            return


def save(ctx, counters, _log):
    args, runner = ctx.args, ctx.runner
    run_state = {"t_env": runner.t_env, "loop": counters.state_dict(),
                 "runner_log_train_stats_t": runner.stats.log_train_stats_t,
                 "runner_train_stats": runner.stats.state_dict(), "env_rng": loop.env_rng_states(ctx, _log)}
    buffer = ctx.buffer.state_dict() if args.save_replay_buffer else None
    return loop.save(ctx, runner.t_env, run_state, _log, buffer=buffer)


def resume(ctx, counters, _log):
    """Load the checkpoint at args.checkpoint_path with its counters, RNG states and buffer; returns its folder."""
    args, runner = ctx.args, ctx.runner
    path = loop.load(ctx)
    _log.info(f"Resuming from {path}")
    state = loop.resume_state(path, ctx)
    if state is None:
        # a pymarl-style checkpoint (weights only): continue from the folder's t_env
        runner.t_env = folder_step(path)
        _log.warning("checkpoint has no run_state.th: counters and RNG start fresh from its t_env")
        return path
    runner.t_env = state["t_env"]
    counters.load_state_dict(state["loop"])
    runner.stats.log_train_stats_t = state["runner_log_train_stats_t"]
    if "runner_train_stats" in state:  # the episodes since the runner's last log (checkpoints since Ctrl-C saves)
        runner.stats.load_state_dict(state["runner_train_stats"])
    loop.restore_env_rngs(runner, state, _log)
    buffer = state["buffer"] if "buffer" in state else load_buffer(path)  # in run_state.th before issue 12
    if buffer is not None:
        ctx.buffer.load_state_dict(buffer)
        refill_fields(ctx, _log)
    elif ctx.learner.on_policy and counters.fresh_episodes:  # (whatever buffer_size: these are lost either way)
        _log.warning(f"checkpoint has no replay buffer (save_replay_buffer=False, or a newer checkpoint of its run "
                     f"holds it) and came between two updates: the {counters.fresh_episodes} episode(s) since the "
                     f"last update are lost, so the next update trains on other episodes than the uninterrupted "
                     f"run's")
    elif args.buffer_size > args.batch_size:
        _log.warning("checkpoint has no replay buffer (save_replay_buffer=False, or a newer checkpoint of its run "
                     "holds it): it refills from new episodes")
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
