"""Suite `lca` of bench/learning_curves.py (issue 16 section 9): which sweep entries run, and the study spec that
src/results.py --study turns into the table and figures. No running or statistics here: src/sweep.py runs the
derived sweep files, src/results.py (src/analysis/study.py) reads them.

Rows (sweep entry names; config/sweeps/lca_<env>.yaml, lca_llm_local.yaml, lca_openai.yaml):
  baselines  mappo, ippo, mappo_individual (grids only), qmix, vdn
  rankers    oracle, noisy70_k1, noisy70_k4, noisy80_k1, noisy80_k4   (row lca_<ranker>; lca_<env>.yaml)
             llm_k1, llm_k2    the bundled local LLM, 1 or 2 queries (lca_llm_local.yaml; slow: hours per env, so
                               only when asked for with --rankers)
             openai_k1         an OpenAI-compatible server (lca_openai.yaml; only with --openai-model)
Every row of the suite is in the table: one that was not asked for or cannot run says "not run" and why.

Rankings and potentials: each LCA trial builds them through lca_ippo's pipeline (src/run/lca_pipeline.py), cached by
settings and under a folder lock, so the seeds of a ranker (launched together) build them once and the others wait
and reuse them; nothing is prebuilt here.
"""
import copy
import os

import study  # bench/study.py (it puts src/ on the path and imports sweeps.spec's load_sweep)

ENVS = ("two_switch", "victim_rubble", "pistonball")
BASELINES = ("mappo", "ippo", "mappo_individual", "qmix", "vdn")
GRID_ONLY = ("mappo_individual",)
NOISY = ("noisy70_k1", "noisy70_k4", "noisy80_k1", "noisy80_k4")
LLM = ("llm_k1", "llm_k2")
OPENAI = ("openai_k1",)
RANKERS = ("oracle", *NOISY, *LLM, *OPENAI)
DEFAULT_RANKERS = ("oracle", *NOISY, *OPENAI)  # openai only runs when configured; the local LLM only when asked
THRESHOLDS = {"two_switch": 0.9, "victim_rubble": 0.9, "pistonball": 0.8}  # Pistonball: 80% wall reach
CURVES = ("test_success_mean", "success_mean", "test_return_mean", "return_mean")
FIGURES = {
    "fig3_panels": ("Fig. 3: LCA (oracle, local LLM, OpenAI) vs the baselines",
                    ["lca_oracle", "lca_llm_k1", "lca_openai_k1", *BASELINES]),
    "fig4_noise": ("Fig. 4: noisy rankings, 70% / 80% accuracy x 1 / 4 queries",
                   ["lca_oracle", *(f"lca_{r}" for r in NOISY)]),
    "fig5_queries": ("Fig. 5: one LLM, 1 vs 2 queries per item", [f"lca_{r}" for r in LLM]),
}


def sweep_file(ranker_or_baseline, env):
    if ranker_or_baseline in LLM:
        return "lca_llm_local"
    if ranker_or_baseline in OPENAI:
        return "lca_openai"
    return f"lca_{env}"


def row_name(item):
    return item if item in BASELINES else f"lca_{item}"


def suite_rows(envs):
    """[(env, row item)]: every baseline and ranker of the suite on each env, in table order."""
    return [(env, item) for env in envs for item in (*BASELINES, *RANKERS)
            if not (item in GRID_ONLY and env == "pistonball")]


def not_run_reason(item, env, baselines, rankers, openai_model):
    """Why a row of the suite is not run this time, or None when it runs."""
    if item in BASELINES and item not in baselines:
        return "not asked for (--baselines)"
    if item in RANKERS and item not in rankers:
        return ("slow local LLM labeling, ask for it with --rankers ... llm_k1 llm_k2" if item in LLM
                else "not asked for (--rankers)")
    if item in OPENAI and not openai_model:
        return "no OpenAI-compatible server configured (--openai-model, --openai-url)"
    return None


def entry_changes(entries, with_):
    """The entries with `with_` applied to the keys their own `with` sets (an entry's `with` wins over the sweep's,
    so --t-max must reach the LLM files' per-entry settings)."""
    out = []
    for entry in entries:
        entry = copy.deepcopy(entry)
        own = entry.get("with") or {}
        for key, value in with_.items():
            if key in own:
                own[key] = value
        out.append(entry)
    return out


def studies(envs, baselines, rankers, seeds=None, with_=None, openai_url=None, openai_model=None):
    """[(sweep file, changes)] for study.run_sweeps: each file's entries that run on `envs`, with the seeds and
    `with` changes (study.changes' layout plus `entries` when the selection differs from the file)."""
    wanted = {(env, row_name(item)) for env, item in suite_rows(envs)
              if not_run_reason(item, env, baselines, rankers, openai_model) is None}
    out, files = [], []
    for env, item in suite_rows(envs):
        name = sweep_file(item, env)
        if (env, row_name(item)) in wanted and name not in files:
            files.append(name)
    for name in files:
        spec = study.load_sweep(name)
        extra = dict(with_ or {})
        if name == "lca_openai":
            extra.update({"llm.model": openai_model, **({"llm.base_url": openai_url} if openai_url else {})})
        diff = study.changes(name, seeds=seeds, with_=extra)
        entries = [e for e in spec["entries"] if (e["env"], e.get("name")) in wanted]
        changed = entry_changes(entries, with_ or {})
        if changed != spec["entries"]:
            diff["entries"] = changed
        out.append((name, diff))
    return out


def study_spec(envs, baselines, rankers, openai_model=None):
    """The spec of src/results.py --study (src/analysis/study.py) for these envs: every suite row, those not run with
    their reason; thresholds, curves and the three figures."""
    rows = []
    for env, item in suite_rows(envs):
        row = {"env": env, "row": row_name(item)}
        why = not_run_reason(item, env, baselines, rankers, openai_model)
        if why:
            row["not_run"] = why
        rows.append(row)
    return {"title": "LCA study (issue 16 section 9)", "metric": "test_success_mean",
            "threshold": {env: THRESHOLDS[env] for env in envs}, "curves": list(CURVES), "rows": rows,
            "figures": {stem: {"title": title, "rows": list(members)} for stem, (title, members) in FIGURES.items()}}


def t_max_changes(t_max):
    """`with` changes of --t-max: t_max and 20 evaluations / log points over it."""
    interval = max(t_max // 20, 1)
    return {"t_max": t_max, "test_interval": interval, "log_interval": interval, "runner_log_interval": interval,
            "learner_log_interval": interval}


def default_out(root):
    return os.path.join(root, "results", "bench", "lca")
