"""Evaluation only: greedy test episodes from a checkpoint (`evaluate=True`, or `run=evaluate`)."""
from run.setup import build
from utils.checkpoint import find_checkpoint


def evaluate_sequential(ctx, _log):
    args, runner = ctx.args, ctx.runner
    if not args.checkpoint_path:
        raise ValueError("evaluation needs a trained model: pass checkpoint_path=results/models/<run> "
                         "(evaluate=True never trains)")
    path = find_checkpoint(args.checkpoint_path, args.load_step)
    ctx.learner.load_models(path, evaluate=True)
    if ctx.acting_mac is not ctx.mac:
        ctx.acting_mac.load_state(ctx.mac)
    _log.info(f"Evaluating {path} for {args.test_nepisode} episodes")
    folder = path.rstrip("/").split("/")[-1]
    runner.t_env = int(folder) if folder.isdigit() else 0
    n_runs = max(1, args.test_nepisode // runner.batch_size)
    for _ in range(n_runs):
        runner.run(test_mode=True)
    ctx.logger.log_stat("episode", n_runs * runner.batch_size, runner.t_env)
    if args.save_replay:
        runner.save_replay()
    ctx.logger.print_recent_stats()
    runner.close_env()
    ctx.logger.finish()


def run_evaluate(_run, config, _log):
    config = dict(config, evaluate=True)
    return evaluate_sequential(build(_run, config, _log), _log)
