"""A study's table and figures (`python src/results.py SWEEPS --study SPEC.json`): named rows (a sweep entry on an
env), per row final score, steps to a threshold, AUC, label accuracy and LLM tokens/cost, mean ± std curves of
several metrics, and figures that each show a chosen set of rows. A row the spec lists that has no runs is shown
"not run" with its reason, never dropped or replaced.

The spec (JSON; bench/learning_curves.py --suite lca writes one):
    {"title": "LCA", "metric": "test_success_mean", "threshold": {"two_switch": 0.9, "pistonball": 0.8} or 0.9,
     "curves": ["test_success_mean", "success_mean", "test_return_mean"],
     "rows": [{"env": "two_switch", "row": "lca_oracle"}, {"env": "two_switch", "row": "lca_llm_k1",
              "not_run": "why"}],
     "figures": {"fig4_noise": {"title": "...", "rows": ["lca_oracle", "lca_noisy70_k1", ...]}}}
A run's row is its sweep entry's `name` (the manifest's entry index into the sweep's entries; an entry without a name
is its alg), its env the trial's env config; runs read from outside a sweep are rows named after the run.
Label accuracy and LLM tokens/cost come from each run's info.json `lca` section (LCA runs; n/a elsewhere).
"""
import json
import os
from collections import Counter

import numpy as np

from analysis import curve_metrics, sources
from analysis.report import fmt_mean_std, lengths_note, skipped_summary
from utils.runs import BUDGET_KEYS, NOT_TRAINING, TRAINING_KINDS, NonFinite, budget

NA = "n/a"


def sweep_rows(paths):
    """{realpath of a run folder: (env, row)} for every trial run of the sweep folders among `paths`."""
    out = {}
    for path in paths:
        manifest_path = os.path.join(path, sources.MANIFEST)
        if not os.path.isfile(manifest_path):
            continue
        with open(manifest_path) as f:
            manifest = json.load(f)
        entries = ((manifest.get("spec") or {}).get("entries") or []) + [
            {"alg": a, "env": e} for a in (manifest.get("spec") or {}).get("algs") or []
            for e in (manifest.get("spec") or {}).get("envs") or []]
        for trial in sources.manifest_trials(manifest):
            index = trial.get("entry")
            entry = entries[index - 1] if isinstance(index, int) and 0 < index <= len(entries) else {}
            row = entry.get("name") or trial.get("alg") or entry.get("alg") or "?"
            env = trial.get("env") or entry.get("env") or "?"
            for key in ("sacred_runs", *sources.RUN_KEYS):
                dirs = trial.get(key) or []
                for d in ([dirs] if isinstance(dirs, str) else dirs):
                    d = d if os.path.isabs(d) or os.path.isdir(d) else os.path.join(path, d)
                    out[os.path.realpath(d)] = (env, row)
    return out


def _get(d, *keys):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def label_info(run_dir):
    """{label_accuracy, tokens, cost_usd} of an LCA run's info.json `lca` section (src/run/lca_pipeline.py):
    lca.labeling.accuracy.accuracy (answers vs the oracle), prompt + completion tokens and cost_usd of the labeling
    this run did; None where it does not say (not an LCA run, an oracle labeler, or rankings reused from an earlier
    run, whose info holds the accuracy but not the tokens)."""
    try:
        with open(os.path.join(run_dir, "info.json")) as f:
            lca = json.load(f).get("lca")
    except (OSError, json.JSONDecodeError, AttributeError):
        lca = None
    labeling = _get(lca, "labeling") or {}

    def number(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    tokens = [number(labeling.get(k)) for k in ("prompt_tokens", "completion_tokens")]
    return {"label_accuracy": number(_get(labeling, "accuracy", "accuracy")),
            "tokens": sum(tokens) if all(t is not None for t in tokens) else None,
            "cost_usd": number(labeling.get("cost_usd"))}


def load_rows(paths, metrics):
    """{(env, row): {metric: [Run]}} and the skipped runs of the first metric, every metric read from `paths`."""
    rows_of = sweep_rows(paths)
    table, skipped = {}, []
    for i, metric in enumerate(metrics):
        runs, skip = sources.load(paths, metric)
        if i == 0:
            skipped = skip
        for run in runs:
            key = rows_of.get(os.path.realpath(run.path), (run.env, run.name))
            table.setdefault(key, {}).setdefault(metric, []).append(run)
    return table, skipped


def skipped_rows(paths, skipped):
    """{(env, row): Counter of why} of the skipped runs (load_rows') that are seeds of a row: a failed, interrupted
    or non-finite run counts out of the table, so the table says so (evaluate and label runs are no seeds)."""
    rows_of = sweep_rows(paths)
    out = {}
    for where, why in skipped:
        if why.endswith(NOT_TRAINING):
            continue
        if isinstance(why, NonFinite):
            key, why = (why.run.env, why.run.name), "non-finite final"
        else:  # a run folder outside a sweep: <name>/<env>/<id>, as read_run names its runs
            env_dir = os.path.dirname(os.path.normpath(where))
            key = (os.path.basename(env_dir), os.path.basename(os.path.dirname(env_dir)))
        out.setdefault(rows_of.get(os.path.realpath(where), key), Counter())[why] += 1
    return out


def row_metrics(runs, threshold=None):
    """Per row (one Run per seed of the study metric): kinds (online / offline), final mean ± std, steps to threshold,
    AUC (budget: each run's utils.runs.budget, t_max env steps or offline_steps gradient steps), label accuracy
    (mean over seeds), LLM tokens and cost (summed: only the seed that labeled spent any);
    None where no run says. Final, AUC and steps to threshold count the finished seeds only."""
    done = [r for r in runs if r.finished]  # a RUNNING run has no final score, AUC or steps to threshold yet
    finals = np.array([r.final for r in done], float)
    aucs = np.array([curve_metrics.auc(r.T, r.values, budget(r)) for r in done], float)
    out = {"runs": len(runs), "kinds": sorted({r.kind for r in runs}), "running": sum(r.running for r in runs),
           "final": finals.tolist(),
           "final_mean": float(finals.mean()) if len(finals) else None,
           "final_std": float(finals.std()) if len(finals) else None, "auc": aucs.tolist(),
           "auc_mean": float(aucs.mean()) if len(aucs) else None,
           "auc_std": float(aucs.std()) if len(aucs) else None,
           "steps": [int(r.T[-1]) for r in runs], "final_steps": [int(r.T[-1]) for r in done],
           "seeds": [r.config.get("seed") for r in runs],
           "paths": [r.path for r in runs]}
    if threshold is not None and done:
        out["to_threshold"] = curve_metrics.threshold_summary([(r.T, r.values) for r in done], threshold).as_dict()
    infos = [label_info(r.path) for r in runs]
    for key, pool in (("label_accuracy", np.mean), ("tokens", np.sum), ("cost_usd", np.sum)):
        # accuracy: the seeds share one rankings file; tokens and cost: spent by the seed that built it
        values = [i[key] for i in infos if i[key] is not None]
        out[key] = float(pool(values)) if values else None
    return out


def _cell(value, digits=3):
    return NA if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


SPEC_KEYS = ("title", "metric", "threshold", "curves", "rows", "figures")


def read_spec(path):
    """The study spec at `path`, checked (check_spec); ValueError naming the file and the first problem."""
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError as e:
        raise ValueError(f"--study {path}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--study {path} is not JSON ({e})") from None
    try:
        check_spec(spec)
    except ValueError as e:
        raise ValueError(f"--study {path}: {e}") from None
    return spec


def check_spec(spec):
    """The layout in the module doc: an unknown key, a row without env / row, figure rows that are not a list of row
    names, a threshold that is not a number or a mapping of numbers, each raise ValueError saying which."""
    if not isinstance(spec, dict):
        raise ValueError(f"a study spec is a JSON object with {', '.join(SPEC_KEYS)}; got {type(spec).__name__}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' (valid: {', '.join(SPEC_KEYS)})")
    for key in ("title", "metric"):
        if key in spec and not isinstance(spec[key], str):
            raise ValueError(f"'{key}' must be a string, got {spec[key]!r}")
    if not isinstance(spec.get("curves") or [], list):
        raise ValueError(f"'curves' must be a list of metric names, got {spec['curves']!r}")
    for i, row in enumerate(spec.get("rows") or []):
        if not isinstance(row, dict) or not isinstance(row.get("env"), str) or not isinstance(row.get("row"), str):
            raise ValueError(f"rows[{i}] must be an object with env and row (strings), got {row!r}")
    if not isinstance(spec.get("rows") or [], list):
        raise ValueError(f"'rows' must be a list of {{env, row}} objects, got {spec['rows']!r}")
    figures = spec.get("figures") or {}
    if not isinstance(figures, dict):
        raise ValueError(f"'figures' must map a file stem to {{title, rows}}, got {figures!r}")
    for stem, fig in figures.items():
        if not isinstance(fig, dict) or not isinstance(fig.get("rows") or [], list) \
                or not all(isinstance(r, str) for r in fig.get("rows") or []):
            raise ValueError(f"figures.{stem} must be {{\"title\": ..., \"rows\": [row names]}}, got {fig!r}")
    threshold = spec.get("threshold")
    if isinstance(threshold, dict):
        bad = {k: v for k, v in threshold.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"threshold values must be numbers, got {bad}")
    elif threshold is not None:
        curve_metrics.parse_thresholds(threshold)


def study_table(spec, table, skipped=None):
    """[row dict] in the spec's order (then rows found but not listed): env, row, status ('ok', 'running' or
    'not run: <why>'), row_metrics' values and `skipped` ({reason: count} of the row's runs left out:
    skipped_rows)."""
    metric = spec.get("metric", "test_success_mean")
    thresholds = curve_metrics.parse_thresholds(spec["threshold"]) if isinstance(spec.get("threshold"), (int, float,
                                                                                                          str)) \
        else {k: float(v) for k, v in (spec.get("threshold") or {}).items()}
    listed = [(r["env"], r["row"], r.get("not_run")) for r in spec.get("rows") or []]
    seen = {(e, r) for e, r, _ in listed}
    listed += [(e, r, None) for (e, r) in sorted(table) if (e, r) not in seen]
    out = []
    for env, row, why in listed:
        runs = (table.get((env, row)) or {}).get(metric) or []
        if not runs:
            reason = why or f"no runs with '{metric}' found"
            out.append({"env": env, "row": row, "status": f"not run: {reason}"})
            continue
        values = row_metrics(runs, curve_metrics.threshold_for(thresholds, env))
        status = f"running ({values['running']} of {values['runs']})" if values["running"] else "ok"
        out.append({"env": env, "row": row, "status": status, **values,
                    "skipped": dict((skipped or {}).get((env, row), {}))})
    return out


def markdown(spec, rows):
    metric = spec.get("metric", "test_success_mean")
    head = ["env", "row", "runs", f"final {metric}", "steps to threshold", "AUC", "label accuracy", "LLM tokens",
            "LLM cost (USD)", "status"]
    lines = [f"# {spec.get('title', 'Study')}", "",
             f"Runs: the runs scored, and of how many where some were left out (failed, interrupted, a non-finite "
             f"final value), and why. "
             f"Final: each finished run's last evaluation, mean ± std over seeds (a running run has none yet). "
             f"Steps to threshold: the first evaluation with "
             f"{metric} >= the env's threshold ({_thresholds_text(spec)}), mean ± std over the seeds that reached it "
             f"(reached/seeds; 'not reached' when none did). AUC: the area under the {metric} curve over [0, budget] / "
             f"budget (the first value held before the first evaluation, the last after the last), budget "
             f"{_budgets_text(rows)}. Label accuracy and LLM tokens/cost: the LCA runs' info.json 'lca' (n/a: not an "
             f"LCA run or not recorded).", *_mixed_note(rows), "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        if "final" not in r:
            lines.append(f"| {r['env']} | {r['row']} | 0 | – | – | – | – | – | – | {r['status']} |")
            continue
        thr = r.get("to_threshold")
        thr_cell = "–" if thr is None else curve_metrics.ThresholdSummary(
            thr["threshold"], np.array([np.nan if s is None else s for s in thr["steps"]], float)).cell()
        final, auc = (fmt_mean_std(r[k]) if r[k] else "–" for k in ("final", "auc"))
        lines.append(f"| {r['env']} | {r['row']} | {_runs_cell(r)} | {final} | {thr_cell} | "
                     f"{auc} | {_cell(r['label_accuracy'])} | {_cell(r['tokens'], 0)} | "
                     f"{_cell(r['cost_usd'], 4)} | {r['status']} |")
    lengths = lengths_note([(r["row"], r["env"], r["final_steps"]) for r in rows if r.get("final_steps")])
    return "\n".join(lines + ([f"\nNote: {lengths}."] if lengths else [])) + "\n"


def _runs_cell(row):
    """The row's runs, and where some were left out (failed, non-finite), of how many and why."""
    out = row.get("skipped") or {}
    if not out:
        return str(row["runs"])
    return (f"{row['runs']} of {row['runs'] + sum(out.values())} ("
            + ", ".join(f"{n} {why}" for why, n in sorted(out.items())) + ")")


def _kinds(rows):
    return sorted({k for r in rows for k in r.get("kinds") or ()})


def _budgets_text(rows):
    names = {k: f"{BUDGET_KEYS[k]} {TRAINING_KINDS[k]}" for k in BUDGET_KEYS}
    kinds = _kinds(rows) or ["online"]
    return " or ".join(f"{names[k]} ({k} rows)" if len(kinds) > 1 else names[k] for k in kinds)


def _mixed_note(rows):
    """A line when online and offline rows share the table: their steps and AUC are on different axes."""
    if len(_kinds(rows)) < 2:
        return []
    return ["", "**This study mixes online rows (x: env steps) and offline rows (x: gradient steps)**: their steps "
                "to threshold and AUCs are on different axes and do not compare across kinds."]


def axis_label(runs):
    """The x axis of curves of these runs: their kind's, or both kinds named where they are mixed."""
    kinds = sorted({r.kind for r in runs}) or ["online"]
    return TRAINING_KINDS[kinds[0]] if len(kinds) == 1 else " / ".join(
        f"{TRAINING_KINDS[k]} ({k})" for k in kinds) + ": different axes"


def _thresholds_text(spec):
    t = spec.get("threshold")
    if t is None:
        return "none given"
    if isinstance(t, dict):
        return ", ".join(f"{k} {v:g}" for k, v in t.items())
    return str(t)


def figures(spec, table, out, band="std"):
    """Per spec figure: a grid of panels, one row per curve metric and one column per env, each selected row's mean
    ± std over seeds; rows without runs are named in the panel title as not run. Returns the files written."""
    from analysis import plots

    plt = plots._pyplot()
    metrics = spec.get("curves") or [spec.get("metric", "test_success_mean")]
    envs = list(dict.fromkeys(r["env"] for r in spec.get("rows") or [])) or sorted({e for e, _ in table})
    files = []
    for stem, fig_spec in (spec.get("figures") or {}).items():
        wanted = fig_spec.get("rows") or []
        colour = plots.colours(wanted)
        fig, axes = plt.subplots(len(metrics), len(envs), figsize=(5 * len(envs), 3.2 * len(metrics)), squeeze=False,
                                 layout="constrained")
        for j, env in enumerate(envs):
            missing = [row for row in wanted if not (table.get((env, row)) or {}).get(metrics[0])]
            for i, metric in enumerate(metrics):
                ax = axes[i, j]
                drawn = []
                for row in wanted:
                    runs = (table.get((env, row)) or {}).get(metric) or []
                    if not runs:
                        continue
                    drawn += runs
                    grid, mean, low, high, n = plots.curve_band(runs, band, 200, 0)
                    ax.plot(grid, mean, color=colour[row], label=f"{row} (n={n.max()})")
                    if n.max() > 1:
                        ax.fill_between(grid, low, high, alpha=0.2, color=colour[row], linewidth=0)
                ax.set_xlabel(axis_label(drawn))
                ax.set_ylabel(metric)
                if i == 0:  # the rows without runs, once per env
                    ax.set_title(env if not missing else f"{env}\nnot run: {', '.join(missing)}",
                                 fontsize=8 if missing else 10)
                if ax.lines:
                    ax.legend(fontsize=7)
        drawn_n = [len((table.get((env, row)) or {}).get(metrics[0]) or []) for env in envs for row in wanted]
        fig.suptitle(f"{fig_spec.get('title', stem)}\n{plots.band_text(band, drawn_n)}", fontsize=10)
        files += plots.save(fig, out, stem)
    return files


def load_study(paths, spec):
    """(table, skipped) of the spec's metric and curves read from `paths`. A metric that no run there logs is a
    typo or the wrong folder, not a study whose every row is "not run": ValueError naming it."""
    metric = spec.get("metric", "test_success_mean")
    metrics = list(dict.fromkeys([metric, *(spec.get("curves") or [])]))
    table, skipped = load_rows(paths, metrics)
    found = {m for runs in table.values() for m in runs}
    missing = [m for m in metrics if m not in found]
    if missing:
        which = "the study's 'metric'" if missing[0] == metric else "a 'curves' entry"
        raise ValueError(f"no run in {' '.join(paths)} logs '{missing[0]}' ({which}): check its spelling against "
                         f"the runs' metrics.json (e.g. test_return_mean, test_success_mean) and the paths"
                         + (f"; {skipped_summary(skipped)}" if skipped else ""))
    return table, skipped


def write_study(paths, spec, out, band="std", plots_on=True, loaded=None):
    """The study's files in `out`: study.md, study.json (rows and curves' sources) and one PNG/PDF per figure.
    `loaded`: load_study's answer when the caller checked it first. Returns {"markdown", "rows", "files"}."""
    table, skipped = loaded or load_study(paths, spec)
    rows = study_table(spec, table, skipped_rows(paths, skipped))
    md = markdown(spec, rows)
    os.makedirs(out, exist_ok=True)
    files = [os.path.join(out, "study.md"), os.path.join(out, "study.json")]
    with open(files[0], "w") as f:
        f.write(md)
    with open(files[1], "w") as f:
        json.dump({"spec": spec, "rows": rows, "skipped": [list(s) for s in skipped]}, f, indent=2)
    if plots_on:
        files += figures(spec, table, out, band)
    return {"markdown": md, "rows": rows, "files": files}
