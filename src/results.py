"""Results of many runs as tables and figures for a paper: final scores per group, IQM and mean across tasks with
bootstrap confidence intervals (rliable), learning curves, interval charts, performance profiles, and marl-eval's
JSON.

    python src/results.py                                     # every run under results/sacred
    python src/results.py results/sweeps/qllm_lbf             # the trials of a sweep (its manifest.json)
    python src/results.py results/sacred --by alg,env,mixer,lr --metric test_return_mean
    python src/results.py results/sacred/bc results/sacred/omiga --normalise results/datasets/reference_returns.json
    python src/results.py --normalise 0,1 --out paper/ --mongo-url mongodb://localhost:27017

Writes to --out (default results/reports/<metric>/, or results/sweeps/<name>/report/ for one sweep folder):
  scores.md        the tables below, the skipped runs and how scores were normalised
  scores.csv       per group: runs, mean, std, percentile-bootstrap 95% CI of the mean (and normalised), steps,
                   re-evaluated finals, non-finite runs (not scored), run folders
  aggregate.csv    per algorithm across tasks: IQM and mean with stratified percentile-bootstrap 95% CIs
  curves.png/.pdf  learning curves, one panel per env (offline runs: gradient steps, panels of their own)
  scores.png/.pdf  IQM and mean with their CIs (interval chart); profile.png/.pdf: performance profiles
  marl_eval.json   marl-eval's raw data layout (compare with BenchMARL / Mava)
  study.md/.json   with --study SPEC.json: a study's rows and figures (src/analysis/study.py)

Which runs: training runs that COMPLETED or are RUNNING (drawn, counted, but not scored: a RUNNING run's last
evaluation is not its final one); evaluate, collection and generation runs,
failed runs, runs whose process died and finished runs whose final value is NaN or inf (named in the notes)
are skipped and counted with the reason. Groups: runs are seeds of one
group when they share name, env, kind (online / offline) and every config key but the seed and bookkeeping
(utils/runs.py); `--by alg,env,KEY,...` splits on the listed keys only and pools the rest as seeds (said in the
report). A task is an env; an algorithm is a group label over its envs. A one-run group shows n=1 and no ± or CI.

Normalised scores (--normalise): `low,high` ((R - low) / (high - low) for every env), `minmax` (per env, the lowest
and highest final score of any run), or a dataset returns file: results/datasets/<env>/<behaviour run>/returns.json
or results/datasets/reference_returns.json, optionally FILE:LOW,HIGH with dataset names (default CODI's
imbalanced_1e and expert_all, else random and expert): (R - R_low) / (R_high - R_low) with those datasets' mean
returns. The aggregates (IQM, mean, profiles) use normalised scores when given, raw ones otherwise.

--finals results/bench/reevaluate/reevaluate.json (scripts/reevaluate.py) replaces each listed run's final score by
its final model's re-evaluation on more episodes (the curves stay the runs' own evaluations): test_return_mean, or
with --metric another test stat the re-evaluation logged (SMAX: test_battle_won_mean).
"""
import argparse
import os
import sys

from utils.paths import RESULTS_ROOT


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="results.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="results/sacred (default), run folders, results/sweeps/<name>")
    parser.add_argument("--metric", default="test_return_mean", help="info.json key (default test_return_mean)")
    parser.add_argument("--by", default=None, metavar="alg,env,KEY,...",
                        help="group by these config keys only (dotted: env_args.time_limit); default: every key "
                             "that differs except the seed and bookkeeping")
    parser.add_argument("--ignore", default="", metavar="KEY,...", help="more keys that do not split groups")
    parser.add_argument("--normalise", "--normalize", default=None, metavar="low,high|minmax|FILE[:LOW,HIGH]")
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("--mongo-url", default=None, help="also read Sacred's MongoObserver database at this URL")
    parser.add_argument("--mongo-db", default="pymarl", help="its database (default pymarl, like mongo_db)")
    parser.add_argument("--finals", action="append", default=[], metavar="reevaluate.json",
                        help="final scores of --metric (test_return_mean or another test stat) from "
                             "scripts/reevaluate.py (the final models evaluated on more episodes) in place of the "
                             "runs' last evaluations, in the tables and aggregates (not --study's); repeat for several "
                             "files")
    parser.add_argument("--band", choices=("std", "ci"), default="std",
                        help="learning-curve band: ± std over runs (default) or the percentile-bootstrap 95%% CI of "
                             "the mean (it undercovers at few runs: the figure says so)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (the same inputs give the same CIs)")
    parser.add_argument("--no-plots", action="store_true", help="tables and JSON only")
    parser.add_argument("--study", default=None, metavar="SPEC.json",
                        help="also a study's table and figures (analysis/study.py): named rows with final score, "
                             "steps to a threshold, AUC, label accuracy and LLM tokens/cost; 'not run' rows kept")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be >= 1 (bootstrap resamples), got {args.reps}")
    return args


def default_out(args):
    if len(args.paths) == 1 and os.path.isfile(os.path.join(args.paths[0], "manifest.json")):
        return os.path.join(args.paths[0], "report")
    return os.path.join(RESULTS_ROOT, "reports", args.metric)


def split_keys(text):
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def check_keys(runs, by, ignore):
    """--by and --ignore keys that no run's config has are typos: refused, naming the closest keys."""
    import difflib

    from utils.runs import MISSING, value

    known = sorted({"alg", "env", "name"} | {k for r in runs for k in r.config})
    for option, keys in (("--by", [k for k in by or () if k not in ("alg", "env", "name")]), ("--ignore", ignore)):
        for key in keys:
            if all(value(r, key) is MISSING for r in runs):
                close = difflib.get_close_matches(key, known, n=3)
                raise SystemExit(f"{option} {key}: no run's config has this key"
                                 + (f"; did you mean {', '.join(close)}?" if close else ""))


def report(args, mongo_client_factory=None):
    """Read, group, compute and write everything; returns {"markdown": str, "files": [paths], "groups": [...],
    "scores": [...], "aggregates": [...], "skipped": [...]}."""
    from analysis import marl_eval, plots, sources, stats
    from analysis import report as tables
    from utils.runs import chained_note, changed_note, group_runs, nonfinite_runs

    paths = args.paths or ([] if args.mongo_url else [os.path.join(RESULTS_ROOT, "sacred")])
    out = args.out or default_out(args)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"--out {out} is a file: give a folder (it gets scores.md, scores.csv, ... and the figures)")
    study_spec = None
    if args.study:  # checked before any work, so that a bad spec leaves no half-written report
        from analysis.study import load_study, read_spec

        try:
            study_spec = read_spec(args.study)
            study_loaded = load_study(paths, study_spec)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    runs, skipped = sources.load(paths, args.metric, args.mongo_url, args.mongo_db,
                                 mongo_client_factory=mongo_client_factory)
    where = " and ".join([*paths, *([f"{args.mongo_url} ({args.mongo_db})"] if args.mongo_url else [])])
    if not runs:
        summary = tables.skipped_summary(skipped)
        raise SystemExit(f"no runs with '{args.metric}' in {where}" + (f" ({summary})" if summary else "")
                         + sources.metric_hint(args.metric, skipped))
    finals_note, rescored = sources.apply_finals(runs, args.finals, args.metric) if args.finals else (None, 0)
    by = split_keys(args.by) if args.by is not None else None
    check_keys(runs, by, split_keys(args.ignore))
    groups = group_runs(runs, ignore=set(split_keys(args.ignore)), by=by, nonfinite=nonfinite_runs(skipped))
    finals_by_env = {}
    for g in groups:
        if g.finished:  # an env whose runs all still run has no final score to normalise by
            finals_by_env.setdefault(g.env, []).extend(r.final for r in g.finished)
    normaliser = stats.make_normaliser(args.normalise, finals_by_env)
    scores = stats.group_scores(groups, normaliser, args.reps, args.seed)
    aggs = stats.aggregates(scores, normalised=normaliser is not None, reps=args.reps, seed=args.seed)
    what = f"normalised {args.metric}" if normaliser else args.metric

    md = [f"# Results: {args.metric}", "", f"Runs from {where}: {len(runs)} used in {len(groups)} group(s).", "",
          "## Final score per group", "",
          ("Final = the final model's re-evaluation where --finals gives one (see the notes), else "
           if finals_note else "Final = ") + "each run's last evaluation; mean ± std over runs (population std); "
          "95% CI: percentile bootstrap of the mean over runs (rliable). One-run groups: n=1, no spread. "
          "Runs still RUNNING have no final score yet: they are drawn, not scored (runs column). At step: the "
          "finals' steps (a re-evaluated final's: its checkpoint's).", "",
          tables.group_table(scores, args.metric, normaliser), "",
          f"## Across tasks: IQM and mean of {what}", "",
          "Per algorithm over the envs it ran on; 95% CIs: stratified percentile bootstrap (rliable: runs resampled "
          "within each task). Runs column: runs per task.", "", tables.aggregate_table(aggs, what), ""]
    notes = [finals_note] if finals_note else []
    if normaliser:
        notes.append(f"normalised scores: {normaliser.description}; per env (low, high): "
                     + ", ".join(f"{env}: ({lo:g}, {hi:g})" for env in sorted(finals_by_env)
                                 for lo, hi in [normaliser.bounds(env)]))
    elif len(finals_by_env) > 1:
        notes.append("the aggregates pool raw scores of envs on different scales: give --normalise to compare "
                     "across tasks")
    lengths = tables.lengths_note([(gs.group.label, gs.group.env, gs.steps) for gs in scores])
    small_n = stats.small_n_note([gs.n for gs in scores] + [n for a in aggs for n in a.runs])
    notes += [n for n in (small_n, chained_note(runs), changed_note(runs), tables.pooled_note(groups), lengths,
                          tables.repeated_seeds_note(groups), tables.unscored_note(groups),
                          tables.nonfinite_note(skipped, args.metric),
                          tables.skipped_summary(skipped)) if n]
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    markdown = "\n".join(md)

    os.makedirs(out, exist_ok=True)
    files = [os.path.join(out, "scores.md"), os.path.join(out, "scores.csv"), os.path.join(out, "aggregate.csv")]
    with open(files[0], "w") as f:
        f.write(markdown)
    tables.write_group_csv(files[1], scores, args.metric)
    tables.write_aggregate_csv(files[2], aggs)
    files.append(marl_eval.write_marl_eval(os.path.join(out, "marl_eval.json"), groups, args.metric))
    if not args.no_plots:
        files += plots.learning_curves(groups, args.metric, out, band=args.band, reps=min(args.reps, 500),
                                       seed=args.seed)
        if aggs:  # none while every run is still running: curves only
            files += plots.interval_chart(aggs, what, out)
            taus, profiles = stats.performance_profiles(aggs, reps=args.reps, seed=args.seed)
            files += plots.performance_profile(taus, profiles, what, out)
    if study_spec is not None:
        from analysis.study import write_study

        study = write_study(paths, study_spec, out, band=args.band, plots_on=not args.no_plots, loaded=study_loaded)
        markdown += "\n" + study["markdown"]
        files += study["files"]
    return {"markdown": markdown, "files": files, "groups": groups, "scores": scores, "aggregates": aggs,
            "skipped": skipped, "normaliser": normaliser, "rescored": rescored}


def main(argv=None, mongo_client_factory=None):
    args = parse_args(argv)
    result = report(args, mongo_client_factory)
    print(result["markdown"])
    print("wrote " + ", ".join(result["files"]))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
