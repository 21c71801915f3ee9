"""Sweeps: many normal runs of src/main.py (algorithms x envs x grid values x seeds) on Ray Tune, on this machine or
a Ray cluster, with a manifest of trials that a killed sweep resumes from.

    spec.py      sweep files (config/sweeps/<name>.yaml, `inherit:`), the inline form, expansion into trials and
                 the validation of every trial's config before any starts (utils.config.build_config, run.preflight)
    manifest.py  results/sweeps/<name>/manifest.json (written atomically) and what a trial's Sacred runs and model
                 folder say about it (found by the trial's `label`)
    trial.py     the Ray Tune function trainable: one `python src/main.py ...` process per trial, resumed from the
                 trial's latest checkpoint when an earlier attempt left one
    driver.py    starting or joining Ray, running the Tuner, progress lines, the manifest
    reevaluate.py  finished trials' final models evaluated again on more episodes (scripts/reevaluate.py,
                 src/results.py --finals, the bench tables' --reevaluate)
"""
