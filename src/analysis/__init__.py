"""Results of many runs as a paper reports them (the library of `python src/results.py`).

    sources.py   which runs: Sacred FileStorage folders, sweep folders (their manifest.json), MongoDB; the selection
                 and grouping rules are utils/runs.py's
    stats.py     final scores per group (mean ± std, 95% bootstrap CI), normalised scores, IQM and mean across
                 tasks with stratified bootstrap CIs and performance profiles (rliable, Agarwal et al. 2021)
    report.py    markdown and CSV tables
    plots.py     learning curves, final-score interval charts, performance profiles (PNG and PDF)
    marl_eval.py marl-eval's raw JSON layout (to compare with BenchMARL and other marl-eval users)
    curve_metrics.py  steps to a threshold and the AUC of learning curves
    study.py     a study's table and figures (results.py --study): named rows, 'not run' rows, label accuracy/cost

Layer: above utils, imported by entry points (src/results.py, scripts/plot.py) only.
"""
