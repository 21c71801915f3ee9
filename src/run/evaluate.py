"""Evaluation only: greedy test episodes from a checkpoint (`evaluate=True`, or `run=evaluate`)."""
from run import loop
from run.setup import build
from utils.checkpoint import folder_step


def evaluate_sequential(ctx, _log):
    args, runner = ctx.args, ctx.runner
    if not args.checkpoint_path:
        raise ValueError("evaluation needs a trained model: pass checkpoint_path=results/models/<run> "
                         "(evaluate=True never trains)")
    if not ctx.learner.trains_actor:
        raise ValueError(f"--config={args.name}: its learner ({args.learner}) trains no policy, so there is nothing to "
                         "evaluate; evaluate the run that trains on what it learned (MARL-SL: --config=omiga with "
                         "offline_reward=label:<name>_reward_hat)")
    path = loop.load(ctx, evaluate=True)
    _log.info(f"Evaluating {path} for {args.test_nepisode} episodes")
    runner.t_env = folder_step(path)
    n_runs = loop.run_test_episodes(ctx, bar=True)
    ctx.logger.log_stat("episode", n_runs * runner.batch_size, runner.t_env)
    if args.save_replay:
        runner.save_replay()
    ctx.logger.print_recent_stats(count_label="test episodes")
    loop.log_final_evaluation(ctx, _log, "t_env")
    loop.finish(ctx)


def run_evaluate(_run, config, _log):
    config = dict(config, evaluate=True)
    return evaluate_sequential(build(_run, config, _log), _log)
