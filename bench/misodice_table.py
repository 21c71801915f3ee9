"""MisoDICE's tables (issue 14 §5): per env x labeler x seed, label -> O-MAPL -> top-K -> 8 methods, as sweeps
(config/sweeps/, src/sweep.py's layer) and tables from src/results.py.

    python bench/misodice_table.py --quick                      # LBF, 1 seed, oracle labels, reduced steps: <= 45 min
    python bench/misodice_table.py                              # LBF, seeds 0-3, oracle + noisy_oracle:0.75 labels
    python bench/misodice_table.py --labelers oracle noisy_oracle:0.75 llm --label-with llm.backend=local
    python bench/misodice_table.py --tables gt k alpha          # + Tables 13, 6 and 8 analogues
    python bench/misodice_table.py --envs lbf_8x8_2p_2f_coop mpe_spread smax --jobs 2
    python bench/misodice_table.py --check                      # build and check every sweep, print the plan, run none
    python bench/misodice_table.py --report-only                # tables from the sweeps run so far
    python bench/misodice_table.py --report-only --reevaluate 256  # the same, final models on 256 episodes

Phases, each a sweep run by the sweep layer (sweeps.driver, one Ray for all; resumable run by run: a sweep whose
folder holds a manifest is finished with --resume, its completed trials kept):
  1. misodice_<env>_label: one `--config=label_preferences` run per labeler (once per env x labeler, pair_seed 0),
     reading <data-dir>/<dataset>.h5 and writing the preference sets into the study copy
     <data-dir>/<dataset>_misodice.h5 (label_out; the reference dataset is left as it is).
  2. misodice_<env>_<labeler>_omapl, per seed s: O-MAPL (preference_set=<labeler>, writes labels
     <labeler>_s<s>_return_hat / _expert: its top-K is D_E; its own policy is the OMAPL row), MARL-SL's reward model
     (name marl_sl_reward, writes <labeler>_s<s>_reward_hat); the first labeler's also BC(beta=0): it needs no
     labels, so it runs once per env x seed and its row is shared by every labeler's table.
  3. misodice_<env>_<labeler>, per seed s: BC(beta=0.5), BC(beta=1), INDD, MisoDICE-VDN, MisoDICE with
     offline_expert=label:<labeler>_s<s>_expert, and MARL-SL = OMIGA on offline_reward=label:<labeler>_s<s>_reward_hat
     (named marl_sl).
  --tables gt:    misodice_<env>_gt: the D_E methods on the ground-truth expert episodes (offline_expert=quality:expert)
  --tables k:     misodice_<env>_k: MisoDICE (named misodice_k<K>) on
                  offline_expert=top:<first labeler>_s<s>_return_hat:K, the top K of phase 2's O-MAPL ranking (K only
                  selects, so O-MAPL is not trained again per K); its top-K precision comes from those labels and the
                  dataset's qualities; K = the default is phase 3
  --tables alpha: misodice_<env>_alpha: MisoDICE with misodice_alpha in a grid (first labeler's D_E)
A sweep is named after its phase; when its trials differ from the shipped file config/sweeps/<name>.yaml (other
seeds, steps, datasets, --quick) it gets a hash suffix and its file goes to <out>/misodice_<env>/sweeps/.

Tables (src/results.py per labeler over phases 2+3, `--by bc_beta`, normalised with the data folder's returns.json,
random -> 0, expert -> 1): final greedy test return (the last evaluation; with --reevaluate N each finished run's final
model evaluated again on N greedy episodes by sweeps/reevaluate.py, into <out>/misodice_<env>/reevaluate/, and
results.py --finals) mean ± std over seeds per method; SMAX:
test_battle_won_mean too; label agreement from the label runs' info.json; O-MAPL top-K precision and Spearman
(results.py --metric topk_precision_sum / return_hat_spearman_sum over phase 2). Written to
<out>/misodice_<env>.{md,json} and the figure <out>/misodice.{png,pdf} (bars: mean ± std per method and env); the
results.py reports (curves, CSVs, marl-eval JSON) under <out>/misodice_<env>/.
"""
import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ (its study helpers), also when imported
import yaml  # noqa: E402

from study import RESULTS_ROOT, ROOT, add_ray_options, sweep_name  # noqa: E402  (also puts src/ on sys.path)
from utils.config import ConfigError, build_config, load_alg, read_yaml  # noqa: E402
from utils.files import load_json  # noqa: E402
from utils.paths import env_label  # noqa: E402

SWEEP_DIR = os.path.join(ROOT, "config", "sweeps")
ENV_TAGS = {"lbf_8x8_2p_2f_coop": "lbf", "mpe_spread": "mpe", "smax": "smax"}
DEFAULT_LABELERS = ["oracle", "noisy_oracle:0.75"]
TABLES = ("gt", "k", "alpha")
K_VALUES = (50, 200, 400, 800, 1200)          # Table 6
ALPHAS = (0.0, 0.05, 0.1, 0.5, 1.0, 10.0)     # Table 8
LLM_PAIRS = 200                               # Tables 1/4: the local LLM labels 200 pairs
WIN_METRIC = "test_battle_won_mean"
# rows of the main table: (label, group name, bc_beta or None)
METHODS = (("BC(β=0)", "bc_beta", 0.0), ("BC(β=0.5)", "bc_beta", 0.5), ("BC(β=1)", "bc_beta", 1.0),
           ("OMAPL", "omapl", None), ("INDD", "indd", None), ("MARL-SL", "marl_sl", None),
           ("MisoDICE-VDN", "misodice_vdn", None), ("MisoDICE", "misodice", None))
DE_METHODS = ("BC(β=0.5)", "BC(β=1)", "INDD", "MisoDICE-VDN", "MisoDICE")  # the methods that take D_E
# --quick: reduced gradient steps (full: each config's own, O-MAPL/MARL-SL 6250 = 100 epochs of 2000 pairs; BC(β)
# and OMIGA 10000; MisoDICE/INDD 7000)
QUICK = {"preference_steps": 2000, "steps": 3000}
# wall seconds per gradient step of one LBF 8x8 trial, start-up and evaluations included, two trials at a time on
# this 2-core VM with nothing else running (2026-12-05/06, sweeps of the study README): O-MAPL 6250 steps in
# 14.1-15.5 min, MARL-SL's reward model 6250 in 2.2-2.5 min, BC(β=0) 10000 in 3.5-3.8 min, BC(β=1) (two batches per
# step) 10000 in ~7 min, MisoDICE 7000 in 2.7-3.0 min (MisoDICE-VDN and INDD: the same stages); OMIGA from BC(β>0)
# by bench/offline_learners.py's update rates (17 vs 30 per s). A busier machine takes longer; SMAX 3m took 0.73x
# (2026-12-06: phases 1-3, two seeds, oracle labels, in 41 min against 56 estimated), 5m_vs_6m's O-MAPL 2.1x (31 min
# beside another trial; its methods ~1.6x). A resumed study estimates from its own completed trials (step_rates).
SEC_PER_STEP = {"omapl": 1 / 7.0, "marl_sl": 1 / 46.0, "bc_beta": 1 / 23.0, "bc_beta0": 1 / 46.0, "omiga": 1 / 13.0,
                "misodice": 1 / 42.0, "misodice_vdn": 1 / 42.0, "indd": 1 / 42.0}


# ----------------------------------------------------------------------------------------------- labelers, plan
def parse_labeler(text, pairs, llm_pairs):
    """'oracle' | 'noisy_oracle[:ACC]' | 'llm' -> (tag, label run updates)."""
    kind, _, arg = text.partition(":")
    if kind == "oracle" and not arg:
        return "oracle", {"labeler": "oracle", "n_pairs": pairs}
    if kind == "noisy_oracle":
        try:
            acc = float(arg or 0.75)
        except ValueError:
            raise SystemExit(f"--labelers {text}: the accuracy after ':' must be a number, e.g. noisy_oracle:0.75") \
                from None
        if not 0.0 <= acc <= 1.0:
            raise SystemExit(f"--labelers {text}: the accuracy must be in [0, 1]")
        return f"noisy{round(acc * 100):02d}", {"labeler": "noisy_oracle", "oracle_accuracy": acc, "n_pairs": pairs}
    if kind == "llm" and not arg:
        return "llm", {"labeler": "llm", "n_pairs": llm_pairs}
    raise SystemExit(f"--labelers {text}: expected oracle, noisy_oracle[:ACCURACY] or llm")


def rel(path):
    """A path as sweep files hold it: relative to the checkout when inside it (also when it is the real path of this
    checkout's results folder, e.g. a symlink to a shared one), else absolute; one file, one spelling, one hash."""
    path = os.path.abspath(path)
    if path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    real, results = os.path.realpath(path), os.path.realpath(RESULTS_ROOT)
    if real.startswith(results + os.sep):
        return os.path.join(os.path.relpath(RESULTS_ROOT, ROOT), os.path.relpath(real, results))
    return path


class Plan:
    """The sweeps of one env: their specs (plain dicts, as sweep files hold them), in the order they run."""

    def __init__(self, env, a):
        self.env, self.a = env, a
        self.tag = ENV_TAGS.get(env, env)
        self.label = env_label(build_config("bc", env))
        self.data_dir = os.path.abspath(a.data_dir or os.path.join(a.results, "datasets", self.label))
        self.source = rel(os.path.join(self.data_dir, f"{a.dataset}.h5"))
        self.data = rel(os.path.join(self.data_dir, f"{a.dataset}_misodice.h5"))
        self.labelers = [parse_labeler(x, a.pairs, a.llm_pairs) for x in a.labelers]
        tags = [t for t, _ in self.labelers]
        if len(set(tags)) != len(tags):
            raise SystemExit(f"--labelers: the same labeler twice ({', '.join(tags)})")
        self.k_default = a.topk or int(load_alg("omapl")["topk_expert"])
        self.alpha_default = float(load_alg("misodice")["misodice_alpha"])
        self.steps = a.steps or (QUICK["steps"] if a.quick else None)
        self.pref_steps = a.preference_steps or (QUICK["preference_steps"] if a.quick else None)
        self.sweeps = []  # [(phase, base name, spec)]
        self.build()

    # --- `with` blocks
    def common(self):
        out = {"offline_dataset": self.data, **self.a.with_}
        if self.a.results != RESULTS_ROOT:
            out["local_results_path"] = os.path.abspath(self.a.results)
        return out

    @staticmethod
    def length(steps):
        """offline_steps and the cadences that go with a changed run length (6 evaluations, a mid checkpoint)."""
        every = max(1, steps // 6)
        return {"offline_steps": steps, "offline_test_interval": every, "offline_log_interval": every,
                "offline_save_interval": max(1, steps // 2)}

    def method(self, alg, expert=None, reward=None, **extra):
        """The `with` of one method run: D_E / reward label, and the run length when changed."""
        out = dict(extra)
        if expert is not None:
            out["offline_expert"] = expert
        if reward is not None:
            out["offline_reward"] = reward
        if self.steps:
            out.update(self.length(self.steps))
            if alg in ("misodice", "misodice_vdn", "indd"):  # the sequential stages keep their 1:2:4 proportions
                out.update(disc_steps=max(1, self.steps // 7), nu_steps=max(1, 2 * self.steps // 7))
        return out

    def preference(self, **extra):
        out = {**extra, "label_overwrite": True}  # a retried run may find its own labels written
        if self.pref_steps:
            out.update(self.length(self.pref_steps))
        if self.a.topk:
            out["topk_expert"] = self.a.topk
        return out

    def spec(self, description, entries, with_=None):
        return {"description": description, "entries": entries, "with": {**self.common(), **(with_ or {})},
                "cpus_per_trial": 1, "metric": "test_return_mean", "retries": 1}

    # --- the sweeps
    def build(self):
        env, seeds = self.env, list(self.a.seeds)
        label_with = {"offline_dataset": self.source, "label_out": self.data, **self.a.label_with}
        if self.a.results != RESULTS_ROOT:
            label_with["local_results_path"] = os.path.abspath(self.a.results)
        label_entries = [{"alg": "label_preferences", "env": env, "name": f"label_{tag}", "seeds": [0],
                          "with": {"label_name": tag, **updates}} for tag, updates in self.labelers]
        self.sweeps.append(("label", f"misodice_{self.tag}_label", {
            "description": f"MisoDICE phase 1 on {env}: preference labels of {self.source} per labeler, stored in "
                           f"{self.data} (bench/misodice_table.py)",
            "entries": label_entries, "with": label_with, "cpus_per_trial": 1, "metric": "test_return_mean",
            "retries": 1}))
        for i, (tag, _) in enumerate(self.labelers):
            p2, p3 = [], []
            for s in seeds:
                name = f"{tag}_s{s}"
                p2 += [{"alg": "omapl", "env": env, "name": "omapl", "seeds": [s],
                        "with": self.preference(preference_set=tag, omapl_label_name=name)},
                       {"alg": "marl_sl", "env": env, "name": "marl_sl_reward", "seeds": [s],
                        "with": self.preference(preference_set=tag, marl_sl_label_name=name, name="marl_sl_reward")}]
                if i == 0:  # BC(beta=0) reads no labels: once, not once per labeler
                    p2 += [{"alg": "bc_beta", "env": env, "name": "bc_beta0", "seeds": [s],
                            "with": self.method("bc_beta", expert="", bc_beta=0.0)}]
                expert = f"label:{name}_expert"
                p3 += [{"alg": "bc_beta", "env": env, "name": f"bc_beta{b:g}", "seeds": [s],
                        "with": self.method("bc_beta", expert=expert, bc_beta=b)} for b in (0.5, 1.0)]
                p3 += [{"alg": "omiga", "env": env, "name": "marl_sl", "seeds": [s],
                        "with": self.method("omiga", reward=f"label:{name}_reward_hat", name="marl_sl")}]
                p3 += [{"alg": alg, "env": env, "name": alg, "seeds": [s], "with": self.method(alg, expert=expert)}
                       for alg in ("indd", "misodice_vdn", "misodice")]
            self.sweeps.append(("omapl", f"misodice_{self.tag}_{tag}_omapl", self.spec(
                f"MisoDICE phase 2 on {env}, labeler {tag}: O-MAPL (top-K = D_E), MARL-SL's reward model"
                + (", BC(beta=0)" if i == 0 else ""), p2)))
            self.sweeps.append(("methods", f"misodice_{self.tag}_{tag}", self.spec(
                f"MisoDICE phase 3 on {env}, labeler {tag}: the methods on O-MAPL's D_E (bench/misodice_table.py)",
                p3)))
        first = self.labelers[0][0]
        if "gt" in self.a.tables:
            entries = [{"alg": "bc_beta", "env": env, "name": f"bc_beta{b:g}",
                        "with": self.method("bc_beta", expert="quality:expert", bc_beta=b)} for b in (0.5, 1.0)]
            entries += [{"alg": alg, "env": env, "name": alg, "with": self.method(alg, expert="quality:expert")}
                        for alg in ("indd", "misodice_vdn", "misodice")]
            spec = self.spec(f"MisoDICE Table 13 analogue on {env}: ground-truth D_E (quality:expert)", entries)
            spec["seeds"] = seeds
            self.sweeps.append(("gt", f"misodice_{self.tag}_gt", spec))
        if "k" in self.a.tables:
            # K only picks D_E from O-MAPL's ranking, so each K's D_E is the top K of phase 2's recovered returns
            # (offline_expert=top:<set>_return_hat:K): no O-MAPL run per K
            ks = [k for k in self.a.k_values if k != self.k_default]
            entries = [{"alg": "misodice", "env": env, "name": f"misodice_k{k}", "seeds": [s],
                        "with": self.method("misodice", expert=f"top:{first}_s{s}_return_hat:{k}",
                                            name=f"misodice_k{k}")} for k in ks for s in seeds]
            if ks:
                self.sweeps.append(("k", f"misodice_{self.tag}_k", self.spec(
                    f"MisoDICE Table 6 analogue on {env}: MisoDICE on the top K of {first}'s O-MAPL ranking for K in "
                    f"{ks}", entries)))
        if "alpha" in self.a.tables:
            alphas = [x for x in self.a.alphas if x != self.alpha_default]
            entries = [{"alg": "misodice", "env": env, "name": "misodice", "seeds": [s],
                        "grid": {"misodice_alpha": alphas},
                        "with": self.method("misodice", expert=f"label:{first}_s{s}_expert")} for s in seeds]
            if alphas:
                self.sweeps.append(("alpha", f"misodice_{self.tag}_alpha", self.spec(
                    f"MisoDICE Table 8 analogue on {env}: misodice_alpha in {alphas} ({first}'s D_E)", entries)))

    def named(self, out):
        """[(phase, base name, name, path of its sweep file)]: the shipped file when the spec is the same, else a
        generated one (name + hash of the spec) in <out>/misodice_<env>/sweeps/."""
        folder = os.path.join(out, f"misodice_{self.env}", "sweeps")
        files = []
        for phase, base, spec in self.sweeps:
            shipped = os.path.join(SWEEP_DIR, f"{base}.yaml")
            if os.path.isfile(shipped) and read_yaml(shipped) == spec:
                files.append((phase, base, base, shipped))
                continue
            key = copy.deepcopy(spec)
            key["with"].pop("local_results_path", None)
            name = sweep_name(base, key)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{name}.yaml")
            write_sweep(path, {**spec, "name": name})
            files.append((phase, base, name, path))
        return files


def write_sweep(path, spec):
    head = ("# Generated by bench/misodice_table.py (Plan.build); edit the generator, not this file: "
            "tests/sweeps/test_misodice_table.py checks that they agree.\n")
    rest = {k: v for k, v in spec.items() if k not in ("entries", "description", "name")}
    lines = [yaml.safe_dump({k: spec[k] for k in ("name", "description") if k in spec}, sort_keys=False,
                            width=10 ** 6, allow_unicode=True).rstrip(), "entries:"]
    lines += ["  - " + yaml.safe_dump(e, sort_keys=False, default_flow_style=True, width=10 ** 6,
                                      allow_unicode=True).strip() for e in spec["entries"]]
    with open(path, "w") as f:
        f.write(head + "\n".join(lines) + "\n" + yaml.safe_dump(rest, sort_keys=False, width=120, allow_unicode=True))


# ----------------------------------------------------------------------------------------------- running
def run_sweep(path, name, a):
    """One sweep through the sweep layer (sweeps.driver; Ray started once for all): a new one, or --resume of the
    one whose folder already has a manifest. Returns (exit code, folder)."""
    from sweeps import driver
    from sweeps.manifest import read_manifest, sweep_folder
    from sweeps.spec import load_sweep

    spec = load_sweep(path)
    spec["name"] = name
    folder = sweep_folder(spec)
    resume = read_manifest(folder) is not None
    if resume:
        print(f"{folder} exists: finishing that sweep (--resume keeps its completed trials)", flush=True)
    sweep = driver.prepare(spec, resume=resume)
    try:
        code = driver.run(sweep, address=a.address, max_concurrent=a.jobs, num_cpus=a.num_cpus)
    finally:
        sweep.lock.release()
    return code, folder


def sweep_folder_of(path, name):
    from sweeps.manifest import sweep_folder
    from sweeps.spec import load_sweep

    spec = load_sweep(path)
    spec["name"] = name
    return sweep_folder(spec)


# ----------------------------------------------------------------------------------------------- results
# Runs of one method differ per seed in their label names (omapl_label_name, offline_expert=label:<lab>_s<seed>_...):
# grouped by run name and env only, so those pool as seeds instead of making one group per seed.
SEED_POOLED = "alg,env"
def results_call(folders, out, metric="test_return_mean", by="bc_beta", normalise=None, plots=False, finals=None):
    """src/results.py (in this process) over sweep folders; returns {(name, bc_beta or key value): GroupScores}
    and the report. `finals`: a reevaluate.json whose re-evaluations replace the runs' last evaluations of a test
    metric (test_return_mean, or another stat its rows hold, e.g. SMAX's test_battle_won_mean)."""
    import results as results_cli

    argv = [*folders, "--metric", metric, "--out", out]
    if finals and metric.startswith("test_"):
        argv += ["--finals", finals]
    if by:
        argv += ["--by", by]
    if normalise:
        argv += ["--normalise", normalise]
    if not plots:
        argv.append("--no-plots")
    print("+ python src/results.py " + " ".join(argv), flush=True)
    try:
        report = results_cli.report(results_cli.parse_args(argv))
    except SystemExit as e:  # no runs with the metric yet
        print(f"  {e}", flush=True)
        return {}, None
    scores = {}
    for gs in report["scores"]:
        g = gs.group
        # group_runs names a --by key only where its value differs between runs: a single value (one β, one α) is
        # still the group's, in its runs' config (all its runs share it), or the lookup by that value finds nothing
        key = (g.settings[by] if by in g.settings else g.runs[0].config.get(by)) if by else None
        scores[(g.name, None if key is None else float(key) if isinstance(key, (int, float)) else key)] = gs
    return scores, report


def reevaluated(folders, episodes, out, jobs):
    """--reevaluate N: every finished trial of the sweep folders evaluated again on N greedy episodes
    (sweeps.reevaluate; rows already in <out>/reevaluate.json for the same request are kept). Returns the
    reevaluate.json for results_call(finals=...), or None when off or there is nothing to evaluate."""
    from sweeps.reevaluate import ROWS, reevaluate_sweeps

    folders = [f for f in folders if f and os.path.isfile(os.path.join(f, "manifest.json"))]
    if not episodes or not folders:
        return None
    print(f"+ re-evaluating the final models of {len(folders)} sweep(s) on {episodes} greedy episodes -> {out}",
          flush=True)
    reevaluate_sweeps(folders, episodes, out, jobs=jobs or 1, log=lambda line: print(line, flush=True))
    return os.path.join(out, ROWS)


def count_rescored(tally, report):
    """Add a results_call report's runs, and those --finals re-scored, to `tally` ({"rescored", "runs"}; None: off)."""
    if tally is not None and report:
        tally["rescored"] += report["rescored"]
        tally["runs"] += sum(len(g.finished) for g in report["groups"])  # the scored runs (RUNNING ones are not)


def final_words(tally):
    """How a table's final return was measured: tally = {"episodes", "rescored", "runs"} of --reevaluate, or None."""
    if not tally or not tally["rescored"]:
        return "each run's last evaluation"
    how = (f"evaluated again on {tally['episodes']} greedy episodes (--reevaluate; scripts/reevaluate.py, rows in "
           "reevaluate/reevaluate.md)")
    if tally["rescored"] == tally["runs"]:
        return f"each run's final model {how}"
    return (f"{tally['rescored']} of {tally['runs']} runs' final models {how}, the other runs' last evaluation (not "
            "finished, or no model folder)")


def cell(gs, digits=3):
    """{mean, std, n, values, normalised..., runs} of a group's final scores (the numbers src/results.py computed)."""
    if gs is None:
        return None
    out = {"mean": float(gs.finals.mean()), "std": float(gs.finals.std()) if gs.n > 1 else None, "n": gs.n,
           "finals": [float(x) for x in gs.finals], "ci": list(gs.ci) if gs.ci else None,
           "at_step": [int(x) for x in gs.steps], "runs": [r.path for r in gs.group.finished]}
    if gs.normalised is not None:
        out.update(normalised_mean=float(gs.normalised.mean()),
                   normalised_std=float(gs.normalised.std()) if gs.n > 1 else None)
    return out


def fmt_cell(c, normalised=False, digits=3, of=None):
    """mean ± std [normalised]; `of`: the seeds asked for, so a cell with fewer finished runs says how many it has."""
    from analysis.report import fmt_mean_std

    if not c:
        return "–"
    partial = f" (n={c['n']} of {of})" if of and c["n"] < of else ("" if c["n"] > 1 else " (n=1)")
    text = fmt_mean_std(c["finals"], digits) + partial
    if normalised and c.get("normalised_mean") is not None:
        std = c.get("normalised_std")  # 0.0 (seeds that agree) is a std, not a one-run cell's None
        norm = f"{c['normalised_mean']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
        text += f" [{norm}]"
    return text


def label_info(label_folder, tag):
    """The label run's accuracy and counts (its info.json), for labeler `tag`."""
    manifest = load_json(os.path.join(label_folder, "manifest.json")) or {}
    for r in manifest.get("trials", []):
        if r.get("id", "").startswith(f"label_{tag}-") and r.get("sacred_run"):
            info = (load_json(os.path.join(r["sacred_run"], "info.json")) or {}).get("labeling") or {}
            return {"sacred_run": r["sacred_run"], "status": r.get("status"), "accuracy": info.get("accuracy"),
                    "counts": info.get("counts"), "settings": info.get("settings"), "reused": info.get("reused")}
    return None


def omapl_ceiling(folder):
    """The ceiling of top-K precision (ranking by the labels' oracle score, `oracle_key`: the return unless the
    labeling set another) from one O-MAPL run's info.json: the same data and K give the same ceiling in every seed."""
    manifest = load_json(os.path.join(folder, "manifest.json")) or {}
    for r in manifest.get("trials", []):
        if r.get("name", "").startswith("omapl") and r.get("sacred_run"):
            labels = (load_json(os.path.join(r["sacred_run"], "info.json")) or {}).get("labels") or {}
            if labels.get("ceiling"):
                return {"topk_expert": labels.get("topk_expert"), "episodes": labels.get("episodes"),
                        "true_experts": labels.get("true_experts"), **labels["ceiling"]}
    return None


def ceiling_score(plan, ds, labeler):
    """(oracle_key, [E] scores) that <labeler>'s preference set was judged by (run: offline's oracle_score, as O-MAPL's
    own report: its labeling settings' oracle_key, and gamma for discounted_return), or the return where the set is
    missing or unreadable (then named in the key)."""
    from offline.format import DatasetError
    from offline.preferences import load_preferences
    from run.offline import oracle_score

    try:
        prefs = load_preferences(ds, labeler, max_unlabeled_fraction=1.0)
    except DatasetError as e:
        return f"return (preference set '{labeler}' unreadable: {str(e).splitlines()[0]})", ds.returns
    gamma = plan.a.with_["gamma"] if "gamma" in plan.a.with_ else build_config("omapl", plan.env)["gamma"]
    return oracle_score(prefs, float(gamma))  # gamma: the O-MAPL runs'; used only if the labeling recorded none


def label_precisions(plan, labeler, seeds, ks):
    """{K: {topk_precision: cell over seeds, ceiling: precision of the top K by the score <labeler>'s preference set
    was judged by (ceiling_score), ceiling_key}} of the top K of O-MAPL's recovered returns (<labeler>_s<s>_return_hat
    in the study copy) against the episodes whose agents are all expert; a cell is None for seeds whose label is
    missing."""
    from learners.episode_ranking import precision_recall, top_k
    from offline import OfflineDataset
    from offline.sampling import top_episodes

    path = os.path.join(ROOT, plan.data) if not os.path.isabs(plan.data) else plan.data
    if not os.path.isfile(path):
        return {k: {"topk_precision": None, "ceiling": None, "ceiling_key": None} for k in ks}
    ds = OfflineDataset.load(path)
    truth = (ds.quality_code_array == ds.quality_codes["expert"]).all(axis=1) if "expert" in ds.quality_codes else None
    key, score = ceiling_score(plan, ds, labeler)
    out = {}
    for k in ks:
        values = [precision_recall(top_episodes(ds, f"top:{labeler}_s{s}_return_hat:{k}"), truth)[0] for s in seeds
                  if f"{labeler}_s{s}_return_hat" in ds.label_names]  # D_E exactly as the runs' offline_expert picks it
        values = [v for v in values if v is not None]
        prec = {"mean": float(np.mean(values)), "std": float(np.std(values)) if len(values) > 1 else None,
                "n": len(values), "finals": values} if values else None
        out[k] = {"topk_precision": prec, "ceiling": precision_recall(top_k(score, k), truth)[0], "ceiling_key": key}
    return out


def references(plan, refs):
    """(normalise argument for results.py or None, {dataset: mean return} of random / expert / the mixture, why
    there is no normalisation or None)."""
    path = refs or os.path.join(plan.data_dir, "returns.json")
    if not os.path.isfile(path.partition(":")[0]):
        return None, {}, f"no {path.partition(':')[0]}"
    table = load_json(path.partition(":")[0]) or {}
    if "datasets" not in table:
        table = table.get(plan.label) or {}
    rows = {r["dataset"]: r["return_mean"] for r in table.get("datasets", [])}
    low, _, high = (path.partition(":")[2] or "random,expert").partition(",")
    if low not in rows or high not in rows:
        why = f"{path.partition(':')[0]} has no row '{' or '.join(k for k in (low, high) if k not in rows)}'"
        print(f"no normalisation: {why}", flush=True)
        return None, rows, why
    return (f"{path.partition(':')[0]}:{low},{high}", {k: rows[k] for k in (low, high, plan.a.dataset) if k in rows},
            None)


def env_report(plan, files, a):
    """Every table of one env from src/results.py calls over its sweeps; returns (markdown, data)."""
    out = os.path.join(os.path.abspath(a.out), f"misodice_{plan.env}")
    folders = {(phase, base): sweep_folder_of(path, name) for phase, base, name, path in files}
    normalise, refs, no_norm = references(plan, a.refs)
    smax = plan.env.startswith("smax")
    data = {"env": plan.env, "env_label": plan.label, "dataset": plan.source, "labelled_copy": plan.data,
            "references": refs, "normalise": normalise, "no_normalisation": no_norm, "quick": a.quick,
            "seeds": list(a.seeds),
            "settings": {"method_steps": plan.steps or "config defaults",
                         "preference_steps": plan.pref_steps or "config defaults", "topk_expert": plan.k_default},
            "labelers": {}, "tables": {}, "sweeps": {f"{p}:{b}": f for (p, b), f in folders.items()}}
    label_folder = folders.get(("label", f"misodice_{plan.tag}_label"))
    finals = reevaluated([f for (phase, _), f in folders.items() if phase != "label"], a.reevaluate,
                         os.path.join(out, "reevaluate"), a.jobs)
    tally = data["reevaluate"] = {"episodes": a.reevaluate, "rescored": 0, "runs": 0} if finals else None
    # the win table's own tally: a re-evaluation row without the win rate leaves that run's last evaluation
    win_tally = data["reevaluate_win"] = dict(tally) if tally and smax else None
    for tag, _ in plan.labelers:
        p2 = folders.get(("omapl", f"misodice_{plan.tag}_{tag}_omapl"))
        p3 = folders.get(("methods", f"misodice_{plan.tag}_{tag}"))
        present = [f for f in (p2, p3) if f and os.path.isfile(os.path.join(f, "manifest.json"))]
        entry = {"label": label_info(label_folder, tag) if label_folder else None, "methods": {}}
        if present:
            scores, report = results_call(present, os.path.join(out, tag), normalise=normalise, plots=True,
                                          finals=finals)
            count_rescored(tally, report)
            wins, win_report = (results_call(present, os.path.join(out, f"{tag}_win"), metric=WIN_METRIC,
                                             finals=finals) if smax else ({}, None))
            count_rescored(win_tally, win_report)
            for label, name, beta in METHODS:
                entry["methods"][label] = cell(scores.get((name, beta)))
                if smax:
                    entry["methods"][label + " win"] = cell(wins.get((name, beta)))
        if p2 and os.path.isfile(os.path.join(p2, "manifest.json")):
            prec = results_call([p2], os.path.join(out, f"{tag}_topk"), metric="topk_precision_sum", by=SEED_POOLED)[0]
            rho = results_call([p2], os.path.join(out, f"{tag}_spearman"), metric="return_hat_spearman_sum",
                               by=SEED_POOLED)[0]
            entry["topk_precision"] = cell(prec.get(("omapl", None)))
            entry["spearman"] = cell(rho.get(("omapl", None)))
            entry["ceiling"] = omapl_ceiling(p2)
        data["labelers"][tag] = entry
    first = plan.labelers[0][0]
    # BC(beta=0) reads no labels: its runs are in the first labeler's phase 2, its row is every labeler's
    shared = {k: v for k, v in data["labelers"][first]["methods"].items() if k in ("BC(β=0)", "BC(β=0) win")}
    for tag in data["labelers"]:
        data["labelers"][tag]["methods"].update(shared)
    main_first = data["labelers"][first]["methods"]
    gt = folders.get(("gt", f"misodice_{plan.tag}_gt"))
    if gt and os.path.isfile(os.path.join(gt, "manifest.json")):
        scores, report = results_call([gt], os.path.join(out, "gt"), normalise=normalise, finals=finals)
        count_rescored(tally, report)
        data["tables"]["ground_truth"] = {label: cell(scores.get((name, beta))) for label, name, beta in METHODS
                                          if label in DE_METHODS}
    k = folders.get(("k", f"misodice_{plan.tag}_k"))
    if k and os.path.isfile(os.path.join(k, "manifest.json")):
        scores, report = results_call([k], os.path.join(out, "k"), normalise=normalise, by=SEED_POOLED,
                                      finals=finals)
        count_rescored(tally, report)
        rows = {}
        ks = sorted({*a.k_values, plan.k_default})
        precisions = label_precisions(plan, first, a.seeds, ks)
        for kk in ks:
            rows[str(kk)] = {"misodice": main_first.get("MisoDICE") if kk == plan.k_default else
                             cell(scores.get((f"misodice_k{kk}", None))), **precisions[kk]}
        data["tables"]["k"] = rows
    alpha = folders.get(("alpha", f"misodice_{plan.tag}_alpha"))
    if alpha and os.path.isfile(os.path.join(alpha, "manifest.json")):
        scores, report = results_call([alpha], os.path.join(out, "alpha"), normalise=normalise,
                                      by="misodice_alpha", finals=finals)
        count_rescored(tally, report)
        data["tables"]["alpha"] = {f"{x:g}": (main_first.get("MisoDICE") if x == plan.alpha_default else
                                              cell(scores.get(("misodice", float(x))))) for x in sorted(a.alphas)}
    return markdown(plan, data), data


def markdown(plan, data):
    tags = list(data["labelers"])
    norm = bool(data["normalise"])

    def cell_text(c, normalised=False):
        return fmt_cell(c, normalised, of=len(data["seeds"]))

    refs = data["references"]
    lines = [f"# MisoDICE table: {plan.env} ({plan.label})", ""]
    if data["quick"]:
        lines += [f"**--quick**: reduced gradient steps (methods {plan.steps}, O-MAPL / MARL-SL reward "
                  f"{plan.pref_steps}; the full run uses each config's own: BC(β) and OMIGA 10000, MisoDICE/INDD "
                  "7000, O-MAPL/MARL-SL 6250): a plumbing check, not the paper comparison.", ""]
    lines += [f"Data: `{plan.source}` (labels in `{plan.data}`); seeds {', '.join(map(str, data['seeds']))}; "
              f"D_E = O-MAPL's top {plan.k_default} per seed.",
              f"Final greedy test return ({final_words(data.get('reevaluate'))}), mean ± std over seeds "
              "(population std), via "
              "src/results.py" + (f"; [normalised] = (R − R_low) / (R_high − R_low) with {data['normalise']}" if norm
                                  else f"; no normalisation ({data.get('no_normalisation')})") + ".", ""]
    if refs:
        low, high = (data["normalise"].rpartition(":")[2].split(",") if norm else (None, None))
        scale = (lambda v: f" [{(v - refs[low]) / (refs[high] - refs[low]):.2f}]") if norm else (lambda v: "")
        lines += ["Dataset mean returns [normalised]: " + ", ".join(f"{k} {v:.3f}{scale(v)}" for k, v in refs.items()),
                  ""]
    lines += ["## Final return per method and labeler (Table 11: oracle; Tables 1/4: noisy 0.75, LLM)", "",
              "| method | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
    for label, _, _ in METHODS:
        lines.append(f"| {label} | " + " | ".join(cell_text(data["labelers"][t]["methods"].get(label), norm)
                                                 for t in tags) + " |")
    if plan.env.startswith("smax"):
        lines += ["", f"## Win rate (test_battle_won_mean, {final_words(data.get('reevaluate_win'))})", "",
                  "| method | " + " | ".join(tags) + " |",
                  "|---|" + "---|" * len(tags)]
        for label, _, _ in METHODS:
            lines.append(f"| {label} | " + " | ".join(cell_text(data["labelers"][t]["methods"].get(label + " win"))
                                                     for t in tags) + " |")
    lines += ["", "## Labels and O-MAPL's top-K", "",
              "Agreement: with the return oracle on non-tie pairs; expert-vs-poor: accuracy on pairs of a ground-truth "
              "expert and a poor episode; top-K precision: O-MAPL's top K by Σ R̂ that are ground-truth expert "
              "(mean ± std over seeds), beside the ceiling of ranking by the labels' oracle score (the return unless "
              "the labeling set another oracle_key).", "",
              "| labeler | pairs | ties | unlabeled | agreement | expert-vs-poor | top-K precision | ceiling | "
              "Spearman(G, return) |", "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for t in tags:
        e = data["labelers"][t]
        acc = (e.get("label") or {}).get("accuracy") or {}

        def num(x):
            return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)
        ceiling = (e.get("ceiling") or {}).get("precision")
        lines.append(f"| {t} | {num(acc.get('items'))} | {num(acc.get('tie_rate'))} | {num(acc.get('unlabeled_rate'))} "
                     f"| {num(acc.get('agreement_return_nontie'))} | {num(acc.get('expert_vs_poor_accuracy'))} | "
                     f"{cell_text(e.get('topk_precision'))} | {num(ceiling)} | {cell_text(e.get('spearman'))} |")
    tables = data["tables"]
    if "ground_truth" in tables:
        first = tags[0]
        lines += ["", f"## Ground-truth D_E (Table 13): quality:expert vs O-MAPL's top-K ({first} labels)", "",
                  "| method | ground-truth D_E | O-MAPL D_E |", "|---|---|---|"]
        for label in DE_METHODS:
            lines.append(f"| {label} | {cell_text(tables['ground_truth'].get(label), norm)} | "
                         f"{cell_text(data['labelers'][first]['methods'].get(label), norm)} |")
    if "k" in tables:
        keys = sorted({row["ceiling_key"] for row in tables["k"].values() if row.get("ceiling_key")}) or ["return"]
        lines += ["", f"## Size K of D_E (Table 6): MisoDICE ({tags[0]} labels)", "",
                  "D_E = the top K of each seed's O-MAPL ranking (its recovered returns); precision against the "
                  "episodes whose agents are all expert; ceiling = the precision of the top K by the labels' oracle "
                  f"score ({', '.join(keys)}).", "",
                  "| K | MisoDICE | O-MAPL top-K precision | ceiling |", "|---:|---|---|---:|"]
        for kk, row in tables["k"].items():
            ceiling = "–" if row.get("ceiling") is None else f"{row['ceiling']:.3f}"
            lines.append(f"| {kk} | {cell_text(row['misodice'], norm)} | {cell_text(row['topk_precision'])} | "
                         f"{ceiling} |")
    if "alpha" in tables:
        lines += ["", f"## α (Table 8): MisoDICE ({tags[0]} labels)", "", "| α | MisoDICE |", "|---:|---|"]
        for x, c in tables["alpha"].items():
            lines.append(f"| {x} | {cell_text(c, norm)} |")
    lines += ["", f"Sweeps: {', '.join(sorted(data['sweeps'].values()))}; per-labeler reports (curves, CSVs, "
                  f"marl-eval JSON) in {rel(os.path.join(plan.a.out, f'misodice_{plan.env}'))}/."]
    return "\n".join(lines) + "\n"


def figure(all_data, out):
    """Bars: final return mean ± std per method (one panel per env, one bar colour per labeler), each bar's n above
    it; a one-run bar has no error bar."""
    from analysis import plots

    plt = plots._pyplot()
    envs = [d for d in all_data if d["labelers"]]
    if not envs:
        return []
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 3.8), squeeze=False)
    for ax, d in zip(axes[0], envs):
        tags = list(d["labelers"])
        colour = plots.colours(tags)
        width = 0.8 / len(tags)
        # bars rise from the lowest dataset reference (random), not from 0: returns may be all negative (spread)
        base = min(d["references"].values()) if d["references"] else 0.0
        for j, t in enumerate(tags):
            cells = [d["labelers"][t]["methods"].get(label) for label, _, _ in METHODS]
            xs = [i + (j - (len(tags) - 1) / 2) * width for i in range(len(METHODS))]
            means = [c["mean"] - base if c else float("nan") for c in cells]
            label = t if any(cells) else f"{t} (not run)"
            ax.bar(xs, means, width, bottom=base, color=colour[t], label=label)
            spread = [(x, c) for x, c in zip(xs, cells) if c and c["n"] > 1]  # n=1: no error bar, never ± 0
            if spread:
                ax.errorbar([x for x, _ in spread], [c["mean"] for _, c in spread],
                            yerr=[c["std"] for _, c in spread], fmt="none", ecolor="black", capsize=2, linewidth=0.8)
            for x, c in zip(xs, cells):
                if c:
                    top = c["mean"] + (c["std"] if c["n"] > 1 else 0.0)
                    ax.annotate(f"n={c['n']}", (x, top), xytext=(0, 2), textcoords="offset points", fontsize=5,
                                ha="center", va="bottom")
        for name, value in d["references"].items():
            ax.axhline(value, linestyle="--", linewidth=0.8, color="grey")
            ax.text(0.99, value, name, transform=ax.get_yaxis_transform(), fontsize=7, color="grey", ha="right",
                    va="bottom")
        ax.set_xticks(range(len(METHODS)), [m[0] for m in METHODS], rotation=30, ha="right", fontsize=8)
        tally = d.get("reevaluate")
        ax.set_ylabel("final greedy test return" + (f"\n({tally['episodes']} episodes per final model)"
                                                    if tally and tally["rescored"] else ""))
        ax.set_title(f"{d['env']} ({len(d['seeds'])} seed(s){', quick' if d['quick'] else ''})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, title="labels", title_fontsize=7)
    fig.suptitle("MisoDICE and baselines: mean ± std over seeds, n above each bar (n=1: no error bar); dashed: "
                 "dataset mean returns", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out, "misodice")


def provenance():
    """Date, commit (with '+changes' when tracked files differ from it) and machine, CPU model included: RL training
    can diverge across CPU types (kernels round differently), so numbers compare best on one model."""
    from utils.provenance import cpu_model, git_info

    git = git_info(ROOT)
    commit = (git["commit"][:7] + ("+changes" if git.get("dirty") else "")) if git.get("commit") else "?"
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit,
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {cpu_model()})"}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    from sweeps.spec import flatten
    from utils.cli import parse_updates

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=None, help="env configs (default lbf_8x8_2p_2f_coop)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 3 (--quick: 0)")
    p.add_argument("--labelers", nargs="+", default=None,
                   help=f"oracle | noisy_oracle[:ACC] | llm (default {' '.join(DEFAULT_LABELERS)}; --quick: oracle)")
    p.add_argument("--tables", nargs="*", default=[], choices=[*TABLES, "all"],
                   help="extra tables: gt (Table 13), k (Table 6), alpha (Table 8)")
    p.add_argument("--quick", action="store_true", help=f"LBF, seed 0, oracle labels, reduced steps ({QUICK})")
    p.add_argument("--dataset", default="mix_200e_1000p", help="dataset name in the data folder")
    p.add_argument("--data-dir", default=None, help="the datasets' folder (default <results>/datasets/<env label>)")
    p.add_argument("--refs", default=None, help="returns file for the normalised score, FILE[:LOW,HIGH] (default "
                                                "<data dir>/returns.json:random,expert)")
    p.add_argument("--pairs", type=int, default=2000, help="preference pairs of the oracle labelers (B.2: 2000)")
    p.add_argument("--llm-pairs", type=int, default=LLM_PAIRS, help="pairs the llm labeler answers (200)")
    p.add_argument("--topk", type=int, default=None, help="O-MAPL's K (default: the omapl config's, 200)")
    p.add_argument("--k-values", nargs="+", type=int, default=list(K_VALUES))
    p.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    p.add_argument("--steps", type=int, default=None, help="gradient steps of every method (default: each config's; "
                                                           f"--quick {QUICK['steps']})")
    p.add_argument("--preference-steps", type=int, default=None,
                   help=f"gradient steps of O-MAPL and MARL-SL's reward model (--quick {QUICK['preference_steps']})")
    p.add_argument("--label-with", nargs="*", default=[], metavar="KEY=VALUE",
                   help="updates of the label runs (e.g. llm.backend=local)")
    add_ray_options(p)  # --jobs, --address, --num-cpus, --results, as every study bench
    p.add_argument("--out", default=os.path.join(RESULTS_ROOT, "bench"))
    p.add_argument("--check", action="store_true", help="build and check every sweep, print the plan, run nothing")
    p.add_argument("--report-only", action="store_true", help="tables from the sweeps run so far; run nothing")
    p.add_argument("--reevaluate", type=int, default=0, metavar="N",
                   help="before the tables, evaluate every finished run's final model again on N greedy episodes "
                        "(--jobs at a time; kept for the next call) and score runs by that (default 0: off)")
    p.add_argument("--write-sweeps", action="store_true",
                   help="write the default plan's sweep files into config/sweeps/ (maintainers)")
    p.add_argument("extra", nargs="*", help="`with` updates of every training run, e.g. test_nepisode=16")
    a = p.parse_args(argv)
    if a.reevaluate < 0:
        p.error(f"--reevaluate must be >= 0 (0: off), got {a.reevaluate}")
    a.results = os.path.abspath(a.results)
    a.envs = a.envs or ["lbf_8x8_2p_2f_coop"]
    for option, values in (("--seeds", a.seeds), ("--envs", a.envs), ("--labelers", a.labelers)):
        if values and len(set(values)) != len(values):
            p.error(f"{option} {' '.join(map(str, values))} repeats a value: each once")
    if any(k < 1 for k in a.k_values):
        p.error(f"--k-values must be >= 1 (the top K of the O-MAPL ranking), got {a.k_values}")
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps must be >= 1, got {a.steps}")
    a.seeds = a.seeds if a.seeds is not None else ([0] if a.quick else [0, 1, 2, 3])
    a.labelers = a.labelers or (["oracle"] if a.quick else list(DEFAULT_LABELERS))
    a.tables = list(TABLES) if "all" in a.tables else a.tables
    try:  # KEY=VALUE tokens as src/main.py reads them: a malformed one is an option error, not a traceback
        a.with_ = flatten(parse_updates(a.extra)) if a.extra else {}
        a.label_with = flatten(parse_updates(a.label_with)) if a.label_with else {}
    except ConfigError as e:
        p.error(str(e))
    return a


def check(plan, files):
    """Every trial of every sweep built and checked as src/main.py would (ConfigError names the first bad one).
    Returns [(phase, trials, ids of those already COMPLETED in the sweep's manifest, {id: wall seconds} of those
    completed trials that ran in one uninterrupted attempt (wall_seconds))]."""
    from sweeps.manifest import read_manifest, sweep_folder
    from sweeps.spec import expand, load_sweep, validate

    checked = []
    for phase, _, name, path in files:
        spec = load_sweep(path)
        spec["name"] = name
        trials = validate(expand(spec))
        manifest = read_manifest(sweep_folder(spec)) or {}
        completed = [t for t in manifest.get("trials", []) if t.get("status") == "COMPLETED"]
        done = {t["id"] for t in completed}
        walls = {t["id"]: w for t in completed if (w := wall_seconds(t)) is not None}
        checked.append((phase, trials, done, walls))
        print(f"  {phase:<8} {name}: {len(trials)} trials" + (f", {len(done)} complete" if done else "")
              + f" ({rel(path)})", flush=True)
    return checked


def wall_seconds(record):
    """A completed manifest trial's own seconds: its subprocess's run_s, when one uninterrupted attempt ran the whole
    trial (a resumed or retried one ran part of it, or its stamps span the time the sweep was down); else None."""
    run_s = record.get("run_s")
    if record.get("resumed_from") or int(record.get("attempts") or 1) > 1 or not run_s or run_s <= 0:
        return None
    return float(run_s)


def rate_key(trial):
    alg = trial["alg"]
    return "bc_beta0" if alg == "bc_beta" and trial["overrides"].get("bc_beta") == 0.0 else alg


def step_rates(checked):
    """Seconds per gradient step for each rate key: the median over this study's own completed trials where it has
    some, else SEC_PER_STEP (LBF's) times this study's median measured/LBF ratio (1 with nothing measured).
    Returns (rates, number of trials measured, ratio)."""
    measured = {}
    for _, trials, _, walls in checked:
        for t in trials:
            if t["id"] in walls and t["t_max"]:
                measured.setdefault(rate_key(t), []).append(walls[t["id"]] / t["t_max"])
    own = {k: statistics.median(v) for k, v in measured.items() if k in SEC_PER_STEP}  # label runs: not steps
    ratio = statistics.median([own[k] / SEC_PER_STEP[k] for k in own]) if own else 1.0
    rates = {k: own.get(k, v * ratio) for k, v in SEC_PER_STEP.items()}
    return rates, sum(len(measured[k]) for k in own), ratio


def estimate(checked, jobs):
    """(CPU seconds, wall seconds, basis) of the training trials left to run (not COMPLETED in their sweep's
    manifest): step_rates x gradient steps per trial; a sweep's wall time is at least its longest trial and at least
    its total over `jobs`, and the sweeps run one after another (label runs: seconds, left out). `basis` says where
    the rates came from."""
    rates, n_measured, ratio = step_rates(checked)
    cpu = wall = 0.0
    for phase, trials, done, _ in checked:
        if phase == "label":
            continue
        times = [t["t_max"] * rates[rate_key(t)] for t in trials if t["id"] not in done]
        cpu += sum(times)
        wall += max(sum(times) / max(1, jobs), max(times, default=0.0))
    if n_measured:
        basis = (f"per-step rates of this study's {n_measured} completed trial(s) as they ran; methods not yet run "
                 f"at LBF's rates x {ratio:.2f}")
    else:
        basis = ("LBF's per-step rates, measured two trials at a time on an otherwise idle 2-core machine; SMAX 3m "
                 "took 0.73x that, 5m_vs_6m 1.6-2.1x, busier machines take longer")
    return cpu, wall, basis


def main(argv=None):
    a = parse_args(argv)
    if a.write_sweeps:
        for env in a.envs:
            for _, base, spec in Plan(env, a).sweeps:
                write_sweep(os.path.join(SWEEP_DIR, f"{base}.yaml"), spec)
                print(f"wrote config/sweeps/{base}.yaml")
        return 0
    plans = [Plan(env, a) for env in a.envs]
    files = {}
    try:
        for plan in plans:
            files[plan.env] = plan.named(os.path.abspath(a.out))
            print(f"{plan.env}: data {plan.source} -> labels in {plan.data}", flush=True)
            checked = check(plan, files[plan.env])
            jobs = a.jobs or a.num_cpus or os.cpu_count()
            cpu, wall, basis = estimate(checked, jobs)
            n, done = (sum(len(t) for p, t, _, _ in checked if p != "label"),
                       sum(len(d) for p, _, d, _ in checked if p != "label"))
            print(f"{plan.env}: {n} training trials" + (f" ({done} complete)" if done else "") + f"; estimated "
                  f"{cpu / 3600:.1f} CPU-hours for the {n - done} left, about {wall / 60:.0f} min with {jobs} "
                  f"trial(s) at a time ({basis})"
                  + (f"; --quick: methods {plan.steps} steps, O-MAPL/MARL-SL reward {plan.pref_steps}" if a.quick
                     else ""), flush=True)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if not a.report_only:
        missing = [p for p in plans if not os.path.isfile(os.path.join(ROOT, p.source)) and not os.path.isfile(
            p.source)]
        for plan in missing:
            print(f"{plan.env}: no dataset {plan.source}: make it with python scripts/reference_datasets.py "
                  f"--envs {plan.env} (or give --data-dir)", file=sys.stderr)
        if missing:
            return 2
    if a.check:
        return 0
    code = 0
    if not a.report_only:
        for plan in plans:
            for _, _, name, path in files[plan.env]:
                rc, _ = run_sweep(path, name, a)
                if rc != 0:
                    print(f"{plan.env}: sweep {name} did not complete (exit {rc}); the phases after it wait: rerun "
                          f"the same command to finish it", file=sys.stderr)
                    code = max(code, rc)
                    break
    os.makedirs(a.out, exist_ok=True)
    all_data, meta = [], provenance()
    for plan in plans:
        md, data = env_report(plan, files[plan.env], a)
        data.update(meta)
        md += f"\n{meta['date']}, commit {meta['commit']}, {meta['machine']}.\n"
        base = os.path.join(a.out, f"misodice_{plan.env}")
        with open(base + ".md", "w") as f:
            f.write(md)
        with open(base + ".json", "w") as f:
            json.dump(data, f, indent=2)
        print(md, flush=True)
        print(f"wrote {base}.md and .json", flush=True)
        all_data.append(data)
    paths = figure(all_data, a.out)
    if paths:
        print(f"wrote {', '.join(paths)}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
