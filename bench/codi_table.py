"""CODI's Table 1, Fig. 4c and Fig. 5 (issue 15 §9) as sweeps (config/sweeps/codi_*.yaml, src/sweep.py's layer) with
tables and learning curves from src/results.py.

    python bench/codi_table.py --envs mpe_spread lbf_8x8_2p_2f_coop --n-agents 3 4 5 --seeds 1 2 3 --preset cpu
    python bench/codi_table.py ... --check              # build and check every sweep, print the plan and estimate
    python bench/codi_table.py ... --report-only        # tables and figures from what has run so far
    python bench/codi_table.py ... --report-only --reevaluate 256   # scored on 256 episodes per final model
    python bench/codi_table.py --quick                  # spread N=3, seed 1, short training: a plumbing check
    python bench/codi_table.py --labeler llm --label-with llm.backend=local label_segments=200
    python bench/codi_table.py --augment-with delta=0.2 --privileged     # + the codi_privileged row

Cells are env x N. mpe_spread takes N as env_args.N (only set where it differs from the env config's); the other
envs have a fixed agent count (LBF 8x8-2p: 2, World: 3 predators) and run once, at their own N, whatever --n-agents
says. Per cell, in order (every step resumable: a rerun skips what is complete):
  0. data     scripts/reference_datasets.py --envs <env> [--env-arg N=<n>] --datasets imbalanced_1e expert_2
              expert_all: the behaviour policy (trained unless a finished run is there) and three datasets of equal
              size (1, 2 and all agents expert) in <results>/datasets/<env label>/ with their returns.json
  1. label    codi_label (one sweep over the cells left): --config=label_agent_quality on imbalanced_1e.h5 with
              --labeler, stored in the study copy imbalanced_1e_codi_<label name>.h5 (label_out; the reference file
              is untouched); the label name is the labeler's tag (noisy80, llm), plus a hash of --label-with if given
  2. augment  codi_augment (one sweep over the runs left): codi, madiff_like (--privileged: codi_privileged) on the
              study copy, augment_preset=--preset, as many episodes as the source, the run's seed = the first of
              --seeds. A label or augment run that a command over other cells completed (same trial: id, algorithm,
              env, seed, overrides, in its sweep's manifest) counts: `--n-agents 3`, then `--n-agents 4 5`, then a
              report of `--n-agents 3 4 5` runs each cell once
  3. no_comp  codi_no_comp (one sweep per cell, once codi's run completed): generates from codi's trained models
              (augment_checkpoint = the artifact folder codi's run names in its info.json): the same labels, network
              and weights, one guidance term with every label 1 (the paper's "w/o comp."), no second training
  4. learn    codi_learn (one sweep per cell x dataset, once its input exists): --learners (--scaling-learners on
              spread N != 3) x --seeds on the original
              imbalanced_1e.h5 or [imbalanced_1e.h5, <generated>.h5], the generated file being the path its augment
              run's info.json gives (augment.generate.path), never a guessed one. Learners already in a learn
              sweep of an earlier command with other --learners are taken from it (a report of all four learners
              combines `--learners bc bc50` and `--learners omar omiga`; no learner's runs are counted twice)
A sweep whose folder holds a manifest is finished with --resume (bench/study.py); its name is the shipped file's
(config/sweeps/codi_<phase>.yaml) or, when the options change it, that name plus a hash of the changes.

Score (src/results.py --by alg,env --normalise <data dir>/returns.json:imbalanced_1e,expert_all): each run's last
greedy evaluation (--reevaluate N: its final model evaluated again on N greedy episodes, sweeps/reevaluate.py, rows in
<cell>/reevaluate/), mean ± std over seeds, and (R - R_imb) / (R_bal - R_imb) with the 1-expert and all-expert datasets'
mean returns. Written to --out (default results/bench/codi/<preset>/):
  table.md / table.json   per env x N x learner x dataset, an averages row, the paper's Table 1 numbers beside (read
                          from the paper's text in ../shared/papers/000_*.txt)
  cn_score.png            Fig. 4c (spread): coverage -sum_l min_i dist(agent i, landmark l) at the first and last step
                          and the gain, for the original data, each augmenter's episodes, expert_2 and expert_all
  scaling.png             Fig. 5 (spread): normalised gain over the original data vs N, per learner
  labels.md               the label runs' accuracy (info.json) and the GRU labeler's (codi's run info)
  generation.md           pass rates, resamples, dropped trajectories, sum r_hat vs the target (the augment runs' info);
                          spread: every file judged by its observations (the env's return for the observed positions,
                          collisions, coverage); LBF: how much of each file is on the grid, food collected, terminals
  <cell>/                 results.py's report per cell: scores, learning curves (curves.png), marl-eval JSON
"""
import argparse
import glob
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ (its study helpers), also when imported
import study  # noqa: E402  (puts src/ on sys.path)
from misodice_table import cell as score_cell  # noqa: E402  (the results.py numbers of one group)
from misodice_table import (  # noqa: E402
    count_rescored,
    final_words,
    fmt_cell,
    provenance,
    reevaluated,
    rel,
    results_call,  # noqa: E402
)
from study import RESULTS_ROOT, ROOT  # noqa: E402
from sweeps.spec import expand, flatten, load_sweep, validate  # noqa: E402
from utils.config import ConfigError, build_config  # noqa: E402
from utils.files import load_json  # noqa: E402
from utils.paths import env_label  # noqa: E402

LEARNERS = {"bc": "BC", "bc50": "50%BC", "omar": "OMAR", "omiga": "OMIGA"}
AUGMENTERS = ("madiff_like", "codi_no_comp", "codi")  # the paper's column order (MADiff, w/o comp., CODI)
PRIVILEGED = "codi_privileged"
TRAINED = ("codi", "madiff_like", PRIVILEGED)  # phase 2; codi_no_comp generates from codi's models (phase 3)
DATASET_NAMES = {"original": "original", "madiff_like": "MADiff-like", "codi_no_comp": "CODI w/o comp.",
                 "codi": "CODI", PRIVILEGED: "CODI privileged"}
SOURCE, TWO, ALL = "imbalanced_1e", "expert_2", "expert_all"
N_ARG = {"mpe_spread": "N"}  # envs whose agent count is an env arg
TAGS = {"mpe_spread": "spread", "lbf_8x8_2p_2f_coop": "lbf", "mpe_world": "world"}
PAPER_TASKS = {("mpe_spread", 3): "CN", ("mpe_world", 3): "World"}  # our cell -> the paper's task of Table 1
PAPER_COLUMNS = ("original", "MBTS", "madiff_like", "MADiTS", "codi_no_comp", "codi_privileged", "codi")
PAPER_ROWS = ("CN", "World", "3m", "Zerg_3v4")
QUICK = {"seeds": [1], "envs": ["mpe_spread"], "n_agents": [3], "steps": 600,
         "augment_with": {"augment_train_steps": 2000}}
# Measured per-run times on this machine's 2 cores, two runs at a time, for --check's estimate of what is left:
# behaviour training + collection (README "Offline MARL": LBF MAPPO 1M 13 min, spread N=3 MAPPO 1.5M 15 min,
# collection 1-2.5 min per env), scaled with N for spread (more agents, longer steps);
# an offline run's seconds per step, evaluations included (the codi_learn sweeps of spread N=3 and LBF, 3000 steps,
# 2026-12-04/05; original and merged data alike), scaled with N for spread; an env not measured takes the largest;
# augment (the codi_augment sweeps side by side, cpu preset): dim 64 (since 2026-12-05) 5.0 training steps/s on
# spread N=4 (dim 32 was ~10.7 on N=3); generation at dim 64, N=4: composed (5 branches) 4000 segments in 5.2 min,
# ~13/s, return-only ~52/s (dim 32, N=3: ~75 composed), each segment adding H - 1 = 7 steps; codi's labeler <= 20k
# steps at ~75 steps/s.
BEHAVIOUR_S = {"lbf_8x8_2p_2f_coop": 13 * 60, "mpe_spread": 15 * 60, "mpe_world": 15 * 60}
COLLECT_S = 90
OFFLINE_S_PER_STEP = {"mpe_spread": {"bc": 0.013, "bc50": 0.013, "omar": 0.052, "omiga": 0.057},
                      "lbf_8x8_2p_2f_coop": {"bc": 0.035, "bc50": 0.035, "omar": 0.105, "omiga": 0.114}}
AUGMENT_STEPS_PER_S = 5.0
SEGMENTS_PER_S = 13
LABELER_S = 20000 / 75


# ----------------------------------------------------------------------------------------------- the paper
def paper_table(path=None):
    """{"rows": {task: {learner label: {column: mean}}}, "average": {column: mean}} of the paper's Table 1, read from
    its text (../shared/papers/000_*.txt; OCR'd: only each entry's mean is reliable), or None when not found."""
    if path is None:
        found = sorted(glob.glob(os.path.join(os.path.dirname(ROOT), "shared", "papers", "000_*.txt")))
        path = found[0] if found else None
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Table 1:")), None)
    if start is None:
        return None
    number = re.compile(r"^[-—–]?\d+\.\d\d")  # an entry is "mean±std" OCR'd into one token: its first number

    def means(tokens):
        out = [number.match(t) for t in tokens]
        return [float(m.group().replace("—", "-").replace("–", "-")) for m in out if m]

    rows, average = [], None
    for line in lines[start:start + 80]:
        tokens = line.split()
        hit = [i for i, t in enumerate(tokens) if t in LEARNERS.values()]
        if hit and len(means(tokens[hit[0] + 1:])) == len(PAPER_COLUMNS):
            rows.append((tokens[hit[0]], means(tokens[hit[0] + 1:])))
        elif tokens and tokens[0] == "Average" and len(means(tokens[1:])) == len(PAPER_COLUMNS):
            average = means(tokens[1:])
            break
    if len(rows) != 4 * len(PAPER_ROWS) or average is None:
        print(f"the paper's Table 1 in {path} did not parse ({len(rows)} rows); it is left out", flush=True)
        return None
    table = {}
    for i, (learner, values) in enumerate(rows):
        table.setdefault(PAPER_ROWS[i // 4], {})[learner] = dict(zip(PAPER_COLUMNS, values))
    return {"file": path, "rows": table, "average": dict(zip(PAPER_COLUMNS, average))}


# ----------------------------------------------------------------------------------------------- the plan
class Cell:
    """One env x N: its env args, label, data folder and files."""

    def __init__(self, env, n, a):
        self.env = env
        key = N_ARG.get(env)
        base = build_config("bc", env)
        self.env_args = {} if key is None or base["env_args"].get(key) == n else {f"env_args.{key}": n}
        config = build_config("bc", env, {"env_args": {key: n}} if self.env_args else None)
        self.n = n if key else own_agents(config)
        # the env as a dataset run makes it (src/envs.env_from_args; datasets hold team rewards only)
        self.env_kwargs = {"env": config["env"], **{k: v for k, v in config["env_args"].items() if k != "seed"},
                           "common_reward": True, "reward_scalarisation": config["reward_scalarisation"]}
        self.limit = int(config["env_args"].get("max_cycles") or 50)  # episode steps, for the estimate
        self.label = env_label(config)
        self.tag = f"{TAGS.get(env, env)}{self.n}"
        self.data_dir = os.path.join(a.results, "datasets", self.label)
        self.source = rel(os.path.join(self.data_dir, f"{SOURCE}.h5"))
        self.copy = rel(os.path.join(self.data_dir, f"{SOURCE}_codi_{a.labeler_tag}.h5"))

    def file(self, name):
        return os.path.join(self.data_dir, f"{name}.h5")


def own_agents(config):
    """The agent count of an env config with a fixed one (its env's get_env_info)."""
    from envs import make_env

    env = make_env(config["env"], **{k: v for k, v in config["env_args"].items() if k != "seed"})
    try:
        return int(env.get_env_info()["n_agents"])
    finally:
        env.close()


def cells_of(a):
    out, seen = [], set()
    for env in a.envs:
        for n in (a.n_agents if env in N_ARG else [None]):
            c = Cell(env, n, a)
            if c.tag not in seen:
                seen.add(c.tag)
                out.append(c)
    return out


def diff_from(base, spec):
    """The changes of `spec` (entries, seeds, with) against the shipped sweep file `base` (bench/study.py's form)."""
    shipped = load_sweep(base)
    out = {k: spec[k] for k in ("entries", "seeds") if k in spec and spec[k] != shipped[k]}
    old = flatten(shipped["with"])
    changed = {k: v for k, v in flatten(spec.get("with", {})).items() if old.get(k) != v}
    if changed:
        out["with"] = changed
    return out


class Plan:
    """The study's sweeps: each method returns one sweep's changes of its shipped file (bench/study.py's diff), from
    the options and, for phases 3-4, the input that phase 2's runs name (their info.json)."""

    def __init__(self, a):
        self.a = a
        self.cells = cells_of(a)
        self.seed0 = a.seeds[0]
        self.trained = [x for x in TRAINED if x != PRIVILEGED or a.privileged]
        from augmenters.codi.settings import PRESETS

        # the preset's width and length as explicit keys: a sweep's manifest records them, and runs made under an
        # earlier version of the preset (the cpu preset was dim 32, 20k steps until 2026-12-05) are not taken for
        # this one's (State matches completed runs by their overrides)
        self.preset_keys = {"diffusion_dim": PRESETS[a.preset]["dim"],
                            "augment_train_steps": PRESETS[a.preset]["train_steps"]}
        self.datasets = ["original", *AUGMENTERS, *([PRIVILEGED] if a.privileged else [])]

    # --- phases 1 and 2: one sweep each over every cell (their specs depend on the options only), or over the cells
    # (label) or (cell tag, augmenter) pairs (augment) that no earlier sweep completed (State.todo)
    def label(self, cells=None):
        entries = [{"alg": "label_agent_quality", "env": c.env, "name": f"label_{c.tag}", "seeds": [self.seed0],
                    "with": {**c.env_args, "offline_dataset": c.source, "label_out": c.copy,
                             "label_name": self.a.labeler_tag, **self.a.label_updates, **self.a.label_with}}
                   for c in (self.cells if cells is None else cells)]
        return diff_from("codi_label", {"entries": entries})

    def augment(self, pairs=None):
        entries = []
        for c in self.cells:
            for aug in self.trained:
                if pairs is not None and (c.tag, aug) not in pairs:
                    continue
                w = {**c.env_args, "offline_dataset": c.copy, "augment_preset": self.a.preset, **self.preset_keys}
                if aug == "codi":
                    w["augment_label_name"] = self.a.labeler_tag
                entries.append({"alg": aug, "env": c.env, "name": f"{aug}_{c.tag}", "seeds": [self.seed0],
                                "with": {**w, **self.a.augment_with}, **self.gpus()})
        return diff_from("codi_augment", {"entries": entries})

    def gpus(self):
        """An augment entry's GPU share (--augment-gpus; use_cuda follows it), none by default."""
        return {"gpus_per_trial": self.a.augment_gpus} if self.a.augment_gpus else {}

    def learners(self, c):
        """--learners, or --scaling-learners on the cells of another N than the env config's (spread N = 4, 5)."""
        return self.a.scaling_learners if c.env_args and self.a.scaling_learners else self.a.learners

    # --- phases 3 and 4: per cell (and dataset), once their inputs exist
    def no_comp(self, c, artifacts):
        w = {**c.env_args, "offline_dataset": c.copy, "augment_preset": self.a.preset, **self.preset_keys,
             "augment_label_name": self.a.labeler_tag, "augment_checkpoint": artifacts, **self.a.augment_with}
        return diff_from("codi_no_comp", {"entries": [{"alg": "codi_no_comp", "env": c.env,
                                                       "name": f"codi_no_comp_{c.tag}", "seeds": [self.seed0],
                                                       "with": w, **self.gpus()}]})

    def learn(self, c, dataset, generated=None, learners=None):
        """The learn sweep of `learners` (default: the cell's) on one dataset."""
        data = c.source if dataset == "original" else [c.source, rel(generated)]
        entries = [{"alg": alg, "env": c.env, "name": f"{dataset}__{alg}",
                    "with": {**c.env_args, "name": f"{dataset}__{alg}", "offline_dataset": data}}
                   for alg in (self.learners(c) if learners is None else learners)]
        w = dict(self.a.with_)
        if self.a.steps:
            every = max(1, self.a.steps // 6)
            w = {"offline_steps": self.a.steps, "offline_test_interval": every, "offline_log_interval": every, **w}
        return diff_from("codi_learn", {"entries": entries, "seeds": list(self.a.seeds), "with": w})

    def learn_groups(self, c, dataset, generated=None):
        """[diff] of the learn sweeps that cover the cell's learners on one dataset: those on disk that an earlier
        command made for another set of learners (largest first; any set holding a wanted learner and none already
        taken, so no learner's runs are counted twice), then one for the learners none of them holds. So `--learners
        bc bc50` and a later `--learners omar omiga` report together under all four, and a later `--learners bc`
        reads the four-learner sweep."""
        todo, taken, groups = list(self.learners(c)), set(), []
        for size in range(len(LEARNERS), 0, -1):
            for subset in itertools.combinations(LEARNERS, size):
                if taken & set(subset) or not set(todo) & set(subset):
                    continue
                diff = self.learn(c, dataset, generated, list(subset))
                if os.path.isfile(os.path.join(sweep_folder(self.a, "codi_learn", diff), "manifest.json")):
                    groups.append(diff)
                    taken |= set(subset)
                    todo = [x for x in todo if x not in subset]
        return groups + ([self.learn(c, dataset, generated, todo)] if todo else [])


def placeholder(c, what):
    return os.path.join(RESULTS_ROOT, "augment", what, c.label, "PENDING", "generated_PENDING.h5")


# ----------------------------------------------------------------------------------------------- sweeps on disk
sweep_name = study.sweep_name


def sweep_folder(a, base, diff):
    return os.path.join(a.results, "sweeps", sweep_name(base, diff))


def completed_run(folder, trial_id):
    """The Sacred run folder of a sweep trial that completed (its manifest record), else None."""
    manifest = load_json(os.path.join(folder, "manifest.json")) or {}
    for r in manifest.get("trials", []):
        if r.get("id") == trial_id and r.get("status") == "COMPLETED" and r.get("sacred_run"):
            return r["sacred_run"]
    return None


def run_info(run_dir, key):
    return ((load_json(os.path.join(run_dir, "info.json")) or {}).get(key) or {}) if run_dir else {}


class State:
    """What the runs of phases 1-3 left: per cell, the label run, each augment run and its generated file. A label or
    augment run counts wherever it completed: in this plan's sweep over every cell, or (same trial id, algorithm,
    env, seed and overrides) in a sweep an earlier command ran over other cells (`--n-agents 3`, then `4 5`, then a
    report of `3 4 5`)."""

    def __init__(self, plan):
        a = plan.a
        self.label_folder = sweep_folder(a, "codi_label", plan.label())
        self.augment_folder = sweep_folder(a, "codi_augment", plan.augment())
        planned = {base: {t["id"]: t for t in expanded(base, diff, a.results)}
                   for base, diff in (("codi_label", plan.label()), ("codi_augment", plan.augment()))}
        done = {base: completed_trials(a.results, base) for base in planned}  # every manifest read once
        self.runs, self.generated, self.no_comp_folder = {}, {}, {}
        for c in plan.cells:
            label_id = f"label_{c.tag}-s{plan.seed0}"
            runs = {"label": completed_anywhere(self.label_folder, planned["codi_label"][label_id], done["codi_label"])}
            for aug in plan.trained:
                trial = planned["codi_augment"][f"{aug}_{c.tag}-s{plan.seed0}"]
                runs[aug] = completed_anywhere(self.augment_folder, trial, done["codi_augment"])
            codi = run_info(runs["codi"], "augment")
            if codi.get("artifacts"):
                diff = plan.no_comp(c, rel(codi["artifacts"]))
                self.no_comp_folder[c.tag] = sweep_folder(a, "codi_no_comp", diff)
                runs["codi_no_comp"] = completed_run(self.no_comp_folder[c.tag], f"codi_no_comp_{c.tag}-s{plan.seed0}")
            self.runs[c.tag] = runs
            for aug, run in runs.items():
                path = run_info(run, "augment").get("generate", {}).get("path") if aug != "label" else None
                if path:
                    self.generated[(c.tag, aug)] = path
        self.todo_label = [c for c in plan.cells if not self.runs[c.tag]["label"]]
        self.todo_augment = {(c.tag, aug) for c in plan.cells for aug in plan.trained if not self.runs[c.tag][aug]}


def expanded(base, diff, results):
    """The trials of a derived sweep as src/sweep.py expands them (no config checks)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = study.derive(base, diff, results, tmp)
        return expand(load_sweep(path))


SAME_TRIAL = ("id", "alg", "env", "seed", "overrides")


def completed_trials(results, base):
    """[(sweep folder, trial record)] of every completed trial in the sweeps of `base` under <results>/sweeps/ (the
    study's generated names: base or base-<8 hex>), in folder order: each manifest read once."""
    out = []
    for path in sorted(glob.glob(os.path.join(results, "sweeps", f"{base}*", "manifest.json"))):
        folder = os.path.dirname(path)
        if not re.fullmatch(rf"{re.escape(base)}(-[0-9a-f]{{8}})?", os.path.basename(folder)):
            continue
        out += [(folder, r) for r in (load_json(path) or {}).get("trials", [])
                if r.get("status") == "COMPLETED" and r.get("sacred_run")]
    return out


def completed_anywhere(folder, trial, done):
    """The Sacred run of `trial` completed in the sweep `folder` (matched by id), else in another sweep of `done`
    (completed_trials) that records the same trial (SAME_TRIAL fields equal), else None."""
    own = [r for f, r in done if os.path.abspath(f) == os.path.abspath(folder) and r.get("id") == trial["id"]]
    if own:
        return own[0]["sacred_run"]
    for _, r in done:
        if all(same_value(k, r.get(k), trial[k]) for k in SAME_TRIAL):
            return r["sacred_run"]
    return None


def same_value(key, recorded, planned):
    """SAME_TRIAL's comparison; the results folder counts as one wherever it is reached from (a checkout whose
    results/ links to another's records the other's real path in its runs)."""
    if key != "overrides" or not isinstance(recorded, dict) or not isinstance(planned, dict):
        return recorded == planned

    def real(overrides):
        path = overrides.get("local_results_path")
        return {**overrides, "local_results_path": os.path.realpath(path)} if isinstance(path, str) else overrides
    return real(recorded) == real(planned)


# ----------------------------------------------------------------------------------------------- check, estimate
def check_sweep(base, diff, results):
    """Validate every trial of a derived sweep as src/main.py would (ConfigError names the first bad one)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, name = study.derive(base, diff, results, tmp)
        return name, validate(expand(load_sweep(path)))


def all_sweeps(plan, state):
    """[(phase, cell tag, base, diff, pending)] in the order they run; pending: built with a placeholder input."""
    out = []
    if state is None or state.todo_label:
        out.append(("label", None, "codi_label", plan.label(state and state.todo_label), False))
    if state is None or state.todo_augment:
        out.append(("augment", None, "codi_augment", plan.augment(state and state.todo_augment), False))
    for c in plan.cells:
        codi = run_info(state.runs[c.tag].get("codi"), "augment").get("artifacts") if state else None
        out.append(("no_comp", c.tag, "codi_no_comp",
                    plan.no_comp(c, rel(codi) if codi else os.path.dirname(placeholder(c, "codi"))), not codi))
        for ds in plan.datasets:
            gen = None if ds == "original" else (state.generated.get((c.tag, ds)) if state else None)
            pending = ds != "original" and gen is None
            out += [("learn", c.tag, "codi_learn", diff, pending)
                    for diff in plan.learn_groups(c, ds, gen or placeholder(c, ds))]
    return out


def cell_of(plan, trial):
    """The plan's cell a trial runs in (its env and, for envs with an agent-count argument, that argument)."""
    key = f"env_args.{N_ARG[trial['env']]}" if trial["env"] in N_ARG else None
    return next(c for c in plan.cells if c.env == trial["env"]
                and (key is None or trial["overrides"].get(key) == c.env_args.get(key)))


def offline_s_per_step(alg, c):
    measured = OFFLINE_S_PER_STEP.get(c.env) or {alg: max(m[alg] for m in OFFLINE_S_PER_STEP.values())}
    return measured[alg] * (c.n / 3 if c.env in N_ARG else 1)


def augment_s(trial, train_steps, generate):
    """CPU seconds of one augment run: the stages its overrides leave to run (src/run/augment.py: augment_stage=
    labeler | train | generate runs that one stage; all runs every stage, or only generate when augment_checkpoint
    names trained models)."""
    o = trial["overrides"]
    stage = o.get("augment_stage", "all")
    if stage == "all" and o.get("augment_checkpoint"):
        stage = "generate"
    labeler = LABELER_S if trial["alg"] == "codi" else 0
    return {"labeler": labeler, "train": train_steps / AUGMENT_STEPS_PER_S, "generate": generate,
            "all": labeler + train_steps / AUGMENT_STEPS_PER_S + generate}[stage]


def estimate(plan, left):
    """(CPU seconds by phase, wall seconds at --jobs) of what is left: the datasets not yet collected and the
    [(phase, trial)] not completed in their sweep's manifest, from the per-run times measured here."""
    a = plan.a
    jobs = a.jobs or a.num_cpus or os.cpu_count() or 1
    from augmenters.codi.settings import PRESETS

    train_steps = int(a.augment_with.get("augment_train_steps") or PRESETS[a.preset]["train_steps"])
    cpu = {"data": 0.0, "augment": 0.0, "learn": 0.0}
    for c in plan.cells:
        if not all(os.path.isfile(c.file(x)) for x in (SOURCE, TWO, ALL)):
            cpu["data"] += BEHAVIOUR_S.get(c.env, 15 * 60) * (c.n / 3 if c.env in N_ARG else 1) + COLLECT_S
    augment_runs = 0
    for phase, t in left:
        c = cell_of(plan, t)
        generate = (a.dataset_episodes or 1000) * -(-c.limit // 7) / SEGMENTS_PER_S
        if phase == "no_comp":
            cpu["augment"] += generate
        elif phase == "augment":
            augment_runs += 1
            cpu["augment"] += augment_s(t, train_steps, generate)
        elif phase == "learn":
            cpu["learn"] += t["t_max"] * offline_s_per_step(t["alg"], c)
    wall = cpu["data"] + cpu["augment"] / min(jobs, max(1, augment_runs)) + cpu["learn"] / jobs
    return cpu, wall


# ----------------------------------------------------------------------------------------------- running
def collect_data(c, a):
    """Phase 0: scripts/reference_datasets.py for one cell (it skips a finished behaviour run and datasets already
    collected from it)."""
    if a.no_collect:
        return 0
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "reference_datasets.py"), "--envs", c.env, "--results",
           a.results, "--datasets", SOURCE, TWO, ALL]
    if c.env_args:
        cmd += ["--env-arg", *(f"{k.split('.', 1)[1]}={v}" for k, v in c.env_args.items())]
    for option, value in (("--t-max", a.dataset_t_max), ("--episodes", a.dataset_episodes)):
        if value is not None:
            cmd += [option, str(value)]
    return study.run(cmd)


def finished(a, base, diff):
    """Whether the sweep's manifest says every trial completed (a rerun then skips it without starting Ray)."""
    trials = (load_json(os.path.join(sweep_folder(a, base, diff), "manifest.json")) or {}).get("trials") or []
    return bool(trials) and all(t.get("status") == "COMPLETED" for t in trials)


def run_phase(sweeps, a):
    """study.run_sweeps over [(base, diff)] that are not finished; returns its exit code (2: a config error)."""
    todo = [(base, diff) for base, diff in sweeps if not finished(a, base, diff)]
    for base, diff in sweeps:
        if (base, diff) not in todo:
            print(f"{sweep_name(base, diff)}: every trial completed (results/sweeps/ manifest): skipped", flush=True)
    return study.run_sweeps(todo, a)[0] if todo else 0


def run_study(plan, a):
    code = 0
    for c in plan.cells:
        rc = collect_data(c, a)
        missing = [n for n in (SOURCE, TWO, ALL) if not os.path.isfile(c.file(n))]
        if rc != 0 or missing:
            print(f"{c.tag}: the datasets are not complete ({', '.join(missing) or f'exit {rc}'} in {c.data_dir}); "
                  f"the later phases need them: rerun to finish", file=sys.stderr)
            return rc or 1
    for phase in ("label", "augment"):
        state = State(plan)  # runs that earlier sweeps (over other cells) completed are not run again
        todo = state.todo_label if phase == "label" else state.todo_augment
        if not todo:
            print(f"{phase}: every cell's runs completed (results/sweeps/ manifests): skipped", flush=True)
            continue
        rc = run_phase([(f"codi_{phase}", plan.label(todo) if phase == "label" else plan.augment(todo))], a)
        if rc not in (0, 1):
            return rc
        code = max(code, rc)
    state = State(plan)
    for c in plan.cells:
        codi = run_info(state.runs[c.tag].get("codi"), "augment").get("artifacts")
        if codi:
            rc = run_phase([("codi_no_comp", plan.no_comp(c, rel(codi)))], a)
            if rc not in (0, 1):
                return rc
            code = max(code, rc)
    state = State(plan)
    for c in plan.cells:
        for ds in plan.datasets:
            gen = state.generated.get((c.tag, ds))
            if ds != "original" and gen is None:
                print(f"{c.tag}: {ds} has no generated dataset yet (its augment run did not complete): its learners "
                      f"wait; rerun to finish", flush=True)
                code = max(code, 1)
                continue
            rc = run_phase([("codi_learn", diff) for diff in plan.learn_groups(c, ds, gen)], a)
            if rc not in (0, 1):
                return rc
            code = max(code, rc)
    return code


# ----------------------------------------------------------------------------------------------- results
def references(c):
    """{dataset: mean return} of the cell's returns.json (imbalanced_1e, expert_2, expert_all)."""
    table = load_json(os.path.join(c.data_dir, "returns.json")) or {}
    return {r["dataset"]: r["return_mean"] for r in table.get("datasets", []) if r["dataset"] in (SOURCE, TWO, ALL)}


def cell_scores(plan, state, c, tally=None):
    """{learner: {dataset: score cell}} of one cell: one src/results.py call over its learn sweeps; and {dataset:
    [sweep folder]}."""
    folders = {}
    for ds in plan.datasets:
        gen = state.generated.get((c.tag, ds))
        if ds == "original" or gen:
            found = [sweep_folder(plan.a, "codi_learn", diff) for diff in plan.learn_groups(c, ds, gen)]
            found = [f for f in found if os.path.isfile(os.path.join(f, "manifest.json"))]
            if found:
                folders[ds] = found
    if not folders:
        return {}, folders
    refs = references(c)
    normalise = (f"{os.path.join(c.data_dir, 'returns.json')}:{SOURCE},{ALL}"
                 if SOURCE in refs and ALL in refs and refs[SOURCE] != refs[ALL] else None)
    every = [f for found in folders.values() for f in found]
    finals = reevaluated(every, plan.a.reevaluate, os.path.join(plan.a.out, c.tag, "reevaluate"), plan.a.jobs)
    scores, report = results_call(every, os.path.join(plan.a.out, c.tag), by="alg,env", normalise=normalise,
                                  plots=True, finals=finals)
    count_rescored(tally, report)
    return {LEARNERS[alg]: {ds: score_cell(scores.get((f"{ds}__{alg}", None))) for ds in plan.datasets}
            for alg in plan.learners(c)}, folders


def normalised(cell):
    return None if not cell else cell.get("normalised_mean")


def build_table(plan, state, paper):
    """table.json's content: per cell the references and scores; averages of the normalised scores per dataset."""
    data = {"preset": plan.a.preset, "labeler": plan.a.labeler_desc, "seeds": list(plan.a.seeds),
            "learners": [LEARNERS[x] for x in plan.a.learners], "datasets": plan.datasets,
            "offline_steps": plan.a.steps or load_sweep("codi_learn")["with"]["offline_steps"],
            "reevaluate": {"episodes": plan.a.reevaluate, "rescored": 0, "runs": 0} if plan.a.reevaluate else None,
            "augment_with": plan.a.augment_with, "cells": {},
            "paper": paper}
    for c in plan.cells:
        scores, folders = cell_scores(plan, state, c, data["reevaluate"])
        data["cells"][c.tag] = {"env": c.env, "n_agents": c.n, "env_label": c.label, "fixed_n": c.env not in N_ARG,
                                "references": references(c), "scores": scores, "sweeps": folders,
                                "generated": {k[1]: v for k, v in state.generated.items() if k[0] == c.tag},
                                "paper_task": PAPER_TASKS.get((c.env, c.n))}
    data["averages"] = averages(data)
    return data


def averages(data):
    """{dataset: mean of the normalised scores over every env x N x learner that has one, how many, and how many of
    those have fewer seeds than asked (each still weighs as one row)}."""
    out = {}
    for ds in data["datasets"]:
        cells = [s.get(ds) for cell in data["cells"].values() for s in cell["scores"].values()]
        cells = [c for c in cells if normalised(c) is not None]
        out[ds] = {"mean": sum(map(normalised, cells)) / len(cells) if cells else None, "rows": len(cells),
                   "partial": sum(c["n"] < len(data["seeds"]) for c in cells)}
    return out


def markdown(data):
    dsets = data["datasets"]
    head = ["# CODI table: offline learners on one-expert data, original vs augmented", "",
            f"Preset `{data['preset']}`; labels: {data['labeler']}; seeds {', '.join(map(str, data['seeds']))}; "
            f"{data['offline_steps']} gradient steps per learner run"
            + (f"; augment runs with {data['augment_with']}" if data["augment_with"] else "") + ".",
            f"Score: greedy return, {final_words(data.get('reevaluate'))}, mean ± std over seeds (src/results.py); "
            "in brackets "
            "(R − R_imb) / (R_bal − R_imb) with R_imb, R_bal = the mean returns of the cell's imbalanced_1e and "
            "expert_all datasets."]
    fixed = [f"{c['env']} (N = {c['n_agents']})" for c in data["cells"].values() if c["fixed_n"]]
    if fixed:
        head.append(f"Fixed agent count, run once at its own N whatever --n-agents says: {', '.join(fixed)}.")
    paper = data.get("paper")
    cols = [DATASET_NAMES[d] for d in dsets]
    lines = head + ["", "| env (N) | learner | " + " | ".join(cols) + " | paper: " + " / ".join(
        DATASET_NAMES[d] for d in dsets if d in PAPER_COLUMNS) + " |", "|---|---|" + "---|" * (len(cols) + 1)]
    for c in data["cells"].values():
        refs = c["references"]
        where = f"{c['env']} (N = {c['n_agents']})"
        for learner in list(c["scores"]) or data["learners"]:
            row = c["scores"].get(learner, {})
            ours = [fmt_cell(row.get(d), normalised=True, of=len(data["seeds"])) for d in dsets]
            ref = "–"
            task = c.get("paper_task")
            if paper and task and learner in paper["rows"].get(task, {}):
                p = paper["rows"][task][learner]
                ref = f"{task}: " + " / ".join(f"{p[d]:.2f}" for d in dsets if d in PAPER_COLUMNS)
            lines.append(f"| {where} | {learner} | " + " | ".join(ours) + f" | {ref} |")
        if refs:
            lines.append(f"| {where} | dataset returns | " + ", ".join(f"{k} {v:.3f}" for k, v in refs.items())
                         + " |" + " |" * len(cols))
            if SOURCE in refs and ALL in refs and refs[ALL] <= refs[SOURCE]:
                lines.append(f"| {where} | **note** | expert_all does not beat imbalanced_1e here: its normalised "
                             "scores mean nothing (a behaviour policy trained too briefly?) |" + " |" * len(cols))
    avg = data["averages"]
    p_avg = " / ".join(f"{paper['average'][d]:.2f}" for d in dsets if d in PAPER_COLUMNS) if paper else "–"
    lines.append("| **average** (normalised) | all | " + " | ".join(
        "–" if avg[d]["mean"] is None else f"{avg[d]['mean']:.2f} ({avg[d]['rows']} rows"
        + (f", {avg[d]['partial']} with fewer seeds" if avg[d]["partial"] else "") + ")" for d in dsets)
        + f" | {p_avg} |")
    if paper:
        lines += ["", f"Paper numbers: Table 1 of {os.path.basename(paper['file'])} (means; CN = spread N = 3; its "
                      "average is over CN, World, 3m and Zerg_3v4 with MBTS and MADiTS left out here); ours is "
                      "over the cells above."]
    lines += ["", "Per-cell reports (scores, learning curves curves.png, marl-eval JSON): "
                  + ", ".join(f"{tag}/" for tag in data["cells"]) + "."]
    return "\n".join(lines) + "\n"


# --- labels.md, generation.md
def num(x):
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def labels_markdown(plan, state):
    lines = ["# Agent-quality labels", "", f"Labeler: {plan.a.labeler_desc}. Label runs: accuracy vs the one expert "
             "of agent_quality over the asked segments (info.json `labeling`); GRU: codi's labeler at every segment "
             "start vs the given labels (its held-out rows) and vs the ground truth (its run's info.json).", "",
             "| env (N) | labeler | protocol hint | segments asked | labeled | accuracy | GRU vs given | "
             "GRU vs truth |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    out = {}
    for c in plan.cells:
        runs = state.runs[c.tag]
        lab = run_info(runs.get("label"), "labeling")
        acc = lab.get("accuracy") or {}
        gru = (run_info(runs.get("codi"), "augment").get("labeler") or {}).get("report") or {}
        settings = lab.get("settings") or {}
        row = {"labeler": lab.get("labeler"), "hint": settings.get("label_protocol_hint"),
               "items": acc.get("items"), "labeled": acc.get("labeled"), "accuracy": acc.get("accuracy"),
               "confusion": acc.get("confusion"), "gru_vs_given": (gru.get("vs_given") or {}).get("accuracy"),
               "gru_vs_truth": (gru.get("vs_truth") or {}).get("accuracy"), "run": runs.get("label")}
        out[c.tag] = row
        lines.append(f"| {c.env} ({c.n}) | {num(row['labeler'])} | {num(row['hint'])} | {num(row['items'])} | "
                     f"{num(row['labeled'])} | {num(row['accuracy'])} | {num(row['gru_vs_given'])} | "
                     f"{num(row['gru_vs_truth'])} |")
    others = every_label_run(plan)
    if others:
        lines += ["", "## Every labeler run on these datasets", "",
                  f"The completed runs of every codi_label sweep under {rel(os.path.join(plan.a.results, 'sweeps'))}/ "
                  "(other --labeler / --oracle-accuracy / --label-with choices, e.g. the LLM with and without "
                  "label_protocol_hint): the LLM's accuracy here is the noisy oracle's accuracy to use "
                  "(--oracle-accuracy). Shuffled: label_shuffle_agents (each segment's agents in its own order, so a "
                  "model's position bias cannot pass for accuracy); positions named: how often each prompt position "
                  "was the answer.", "",
                  "| env (N) | label name | labeler | model | oracle accuracy | protocol hint | shuffled | segments "
                  "asked | labeled | accuracy | positions named |", "|---|---|---|---|---:|---|---|---:|---:|---:|---|"]
        for r in others:
            lines.append(f"| {r['env']} ({r['n']}) | {num(r['label_name'])} | {num(r['labeler'])} | "
                         f"{num(r['model'])} | {num(r['oracle_accuracy'])} | {num(r['hint'])} | {num(r['shuffled'])} | "
                         f"{num(r['items'])} | {num(r['labeled'])} | {num(r['accuracy'])} | "
                         f"{num(r['positions'])} |")
    return "\n".join(lines) + "\n", {"runs": out, "every_run": others}


def every_label_run(plan):
    """The completed label runs of every codi_label* sweep of --results whose dataset is one of the cells' sources."""
    cells = {os.path.normpath(os.path.join(ROOT, c.source)): c for c in plan.cells}
    rows = []
    for manifest in sorted(glob.glob(os.path.join(plan.a.results, "sweeps", "codi_label*", "manifest.json"))):
        for r in (load_json(manifest) or {}).get("trials", []):
            lab = run_info(r.get("sacred_run"), "labeling") if r.get("status") == "COMPLETED" else {}
            c = cells.get(os.path.normpath(os.path.join(ROOT, lab.get("dataset") or "")))
            if c is None:
                continue
            settings, acc = lab.get("settings") or {}, lab.get("accuracy") or {}
            rows.append({"env": c.env, "n": c.n, "label_name": lab.get("label_name"), "labeler": lab.get("labeler"),
                         "model": settings.get("model"), "oracle_accuracy": settings.get("oracle_accuracy"),
                         "hint": settings.get("label_protocol_hint"),
                         "shuffled": bool(settings.get("label_shuffle_agents")),
                         "positions": acc.get("position_counts"), "items": acc.get("items"),
                         "labeled": acc.get("labeled"), "accuracy": acc.get("accuracy"), "run": r["sacred_run"]})
    return rows


def generation_markdown(plan, state):
    lines = ["# Generation", "", "Per augment run (info.json `augment.generate`): episodes generated, segment pass "
             "rate (accepted / denoised), the real pass rate at the same δ (held-out real segments), re-denoised "
             "segments, dropped trajectories, the view-gap filter (max_view_gap, and the segments it rejected that "
             "passed δ), Σr̂ per episode vs the target R, the episodes whose Σr̂ lies outside the source's returns "
             "(above / below its range: the reward model pays what the env never did; runs before the count: –), "
             "mean length.", "",
             "| env (N) | augmenter | episodes | δ | pass rate | real pass rate | resamples | dropped | view gap ≤ "
             "(rejected) | Σr̂ mean ± std | target | outside source returns | length | file |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|"]
    out = {}
    for c in plan.cells:
        for aug in [x for x in plan.datasets if x != "original"]:
            g = run_info(state.runs[c.tag].get(aug), "augment").get("generate")
            if not g:
                lines.append(f"| {c.env} ({c.n}) | {aug} | not run | | | | | | | | | | | |")
                continue
            k = g.get("counters", {})
            out[f"{c.tag}/{aug}"] = g
            gap = "off" if g.get("max_view_gap") is None else f"{g['max_view_gap']:g} ({k.get('rejected_view_gap')})"
            outside = ("–" if "source_return_range" not in g else
                       f"{k.get('return_above_source')} / {k.get('return_below_source')} of "
                       f"[{g['source_return_range'][0]:.3g}, {g['source_return_range'][1]:.3g}]")
            lines.append(f"| {c.env} ({c.n}) | {aug} | {k.get('episodes', '–')} | {g.get('delta', 0):.3g} | "
                         f"{g.get('pass_rate', 0):.3f} | {g.get('real_pass_rate', 0):.3f} | {k.get('resamples', '–')} "
                         f"| {k.get('dropped', '–')} | {gap} | "
                         f"{g.get('return_mean', 0):.3g} ± {g.get('return_std', 0):.3g} | "
                         f"{g.get('target_rtg', 0):.3g} | {outside} | {g.get('length_mean', 0):.1f} | "
                         f"{rel(g['path'])} |")
    return "\n".join(lines) + "\n", out


# --- figures
SEGMENT_GAPS = (0.15, 0.3)  # max_view_gap values whose pass fraction generation.md gives (agent radius 0.15)


def spread_check(path, env):
    """MPE spread data judged by their observations alone (MPEEnv.spread_terms_from_obs, the env's own reward
    terms): coverage -sum_l min_i dist(agent i, landmark l) at the first and the last observation (Fig. 4c), the
    return the env pays for the observed positions, colliding pairs per episode, and the stored return beside them
    (sum r_hat for generated files: f_rwd's view). Means over episodes. The env places the landmarks from agent 0's
    offsets; `view_gap` (the env's view_gap_from_obs, mean over observations) says how far the other agents' offsets
    put them or their teammates: 0 up to float32 for real data, nonzero where a generator's agents disagree.
    `segment_gap` is what `max_view_gap` would see: per generated segment (the H-1 observations it adds, H from the
    file's generation settings, else 8) the largest view gap; its 10/50/90% quantiles and the fraction of segments
    at or under each of SEGMENT_GAPS (world units; an agent's radius is 0.15). Where the agents end up, at each
    episode's last observation: `claimed`, how many different landmarks are some agent's nearest (n: every agent
    heads for its own; 1: all on one), `end_pair`, the median distance of the closest two agents, and `end_reach`,
    the median distance of an agent to its nearest landmark."""
    import json

    import numpy as np

    from offline.reader import OfflineDataset

    ds = OfflineDataset.load(path)
    arrays = ds.arrays()
    horizon = int((json.loads(ds.attrs.get("config") or "{}").get("generation") or {}).get("horizon", 8))
    obs, filled = np.asarray(arrays["obs"]), np.asarray(arrays["filled"])[..., 0] > 0  # filled: observation rows
    E = obs.shape[0]
    closest, own = env.spread_terms_from_obs(obs)  # [E, T+1, n] each
    gap = env.view_gap_from_obs(obs)  # [E, T+1]
    T = obs.shape[1] - 1
    starts = range(1, T + 1, horizon - 1)  # a segment adds observations k .. k + H - 2; it exists iff obs k does
    segment_gap = np.stack([np.where(filled[:, k:k + horizon - 1], gap[:, k:k + horizon - 1], 0).max(1)
                            for k in starts], 1)[filled[:, list(starts)]]
    cover = -closest.sum(-1)
    arrived = filled[:, 1:]  # transition t is in the episode iff the observation it reaches is
    last = filled.sum(1).astype(int) - 1
    end = obs[np.arange(E), last]  # [E, n, O]
    P, L = env.positions_from_obs(end), env.landmarks_from_obs(end)[:, 0]  # [E, n, 2] each
    to_landmarks = np.sqrt(np.square(P[:, :, None] - L[:, None]).sum(-1))  # [E, agent, landmark]
    nearest = to_landmarks.argmin(-1)  # [E, n]: each agent's landmark
    pairs = np.sqrt(np.square(P[:, :, None] - P[:, None]).sum(-1)) + np.diag(np.full(P.shape[1], np.inf))
    return {"first": float(cover[:, 0].mean()), "last": float(cover[np.arange(E), last].mean()),
            "gain": float((cover[np.arange(E), last] - cover[:, 0]).mean()),
            "stored_return": float(np.asarray(arrays["episode_return"]).mean()),
            "obs_return": float((env.reward_from_obs(obs[:, 1:]) * arrived).sum(1).mean()),
            "collisions": float((own[:, 1:].sum(-1) / 2 * arrived).sum(1).mean()),
            "view_gap": float(gap[filled].mean()),
            "claimed": float(np.mean([len(set(row)) for row in nearest.tolist()])),
            "end_pair": float(np.median(pairs.min((1, 2)))),
            "end_reach": float(np.median(to_landmarks.min(-1))),
            "segment_gap": {"horizon": horizon, "quantiles": [float(q) for q in np.quantile(segment_gap, [.1, .5, .9])],
                            "at_or_under": {str(x): float((segment_gap <= x).mean()) for x in SEGMENT_GAPS}}}


def grid_check(path, env):
    """Data of an env whose observations take discrete values (`snap_obs`: full-sight LBF's grid) judged by their
    observations: `on_grid`, the fraction of observations (past an episode's end not counted) within 0.1 of what
    the env would show for them (env.snap_obs) in every entry, and `off_grid`, their mean largest distance to it;
    per episode: `food`, the items collected (food slots of state_from_obs full at the first observation and empty
    at the last: a food that a generator moves off its cell counts too), `terminal` (the episode ends in the env's
    terminal: all food collected), the stored return (Σr̂ for generated files) and the number of transitions."""
    import numpy as np

    from offline.reader import OfflineDataset

    arrays = OfflineDataset.load(path).arrays()
    obs, filled = np.asarray(arrays["obs"]), np.asarray(arrays["filled"])[..., 0] > 0
    E = obs.shape[0]
    dist = np.abs(obs - env.snap_obs(obs)).max((-2, -1))[filled]
    last = filled.sum(1).astype(int) - 1
    state = env.state_from_obs(obs, np.asarray(arrays["actions"])[..., 0])
    foods = [f for f in env.state_schema() if f.name.startswith("food_")]
    if not foods:
        raise ValueError("its state has no food fields to count collected food with (LBF's state: qllm has them)")
    levels = np.stack([state[..., f.end - 1] for f in foods], -1)
    collected = (levels[:, 0] > 0) & (levels[np.arange(E), last] <= 0)  # [E, foods]
    return {"on_grid": float((dist <= 0.1).mean()), "off_grid": float(dist.mean()),
            "food": float(collected.sum(1).mean()),
            "terminal": float(np.asarray(arrays["terminated"])[..., 0].any(1).mean()),
            "stored_return": float(np.asarray(arrays["episode_return"]).mean()), "length": float(last.mean())}


def grid_table(plan, state):
    """{cell tag: {dataset: grid_check}} for the LBF cells whose env has `snap_obs` (full sight, state: qllm)."""
    return judge_cells(plan, state, lambda c: c.env.startswith("lbf"), grid_check)


def grid_markdown(grid):
    """generation.md's LBF table: every file judged by its observations (grid_check)."""
    if not grid:
        return ""
    lines = ["", "## Judged by the observations (LBF)", "",
             "Means over episodes, from each file's observations with the env's hooks: the fraction of observations "
             "on LBF's grid (every entry within 0.1 of what the env would show for the grid the views describe, "
             "LBFEnv.snap_obs) and the mean largest distance from it; food collected per episode (a food present at "
             "the first observation and gone from its cell at the last, state_from_obs: for data off the grid an "
             "upper bound, as a food a generator moves counts); episodes ending in the terminal (all food "
             "collected); the stored return (Σr̂ for generated files); transitions per episode.",
             "", "| cell | data | on the grid | off by (mean) | food collected | terminal | stored return | length |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for tag, row in grid.items():
        for name, r in row.items():
            lines.append(f"| {tag} | {DATASET_NAMES.get(name, name)} | {r['on_grid']:.3f} | {r['off_grid']:.3f} | "
                         f"{r['food']:.3f} | {r['terminal']:.3f} | {r['stored_return']:.3f} | {r['length']:.1f} |")
    return "\n".join(lines) + "\n"


def coverage_table(plan, state):
    """{cell tag: {dataset: spread_check}} for the spread cells."""
    return judge_cells(plan, state, lambda c: c.env == "mpe_spread", spread_check)


def judge_cells(plan, state, accept, check):
    """{cell tag: {dataset: check(path, env)}} over the cells `accept` takes: the original data, each augmenter's
    file, the 2- and all-expert datasets. A cell whose env cannot be judged so (a hook it lacks, e.g. LBF with
    partial sight) is left out with a line saying why."""
    from envs import make_env

    out = {}
    for c in plan.cells:
        if not accept(c):
            continue
        files = {"original": c.file(SOURCE), **{aug: state.generated.get((c.tag, aug))
                                                for aug in plan.datasets if aug != "original"},
                 TWO: c.file(TWO), ALL: c.file(ALL)}
        kwargs = dict(c.env_kwargs)
        env = make_env(kwargs.pop("env"), **kwargs)
        try:
            row = {name: check(path, env) for name, path in files.items() if path and os.path.isfile(path)}
        except (NotImplementedError, ValueError) as e:
            print(f"{c.tag}: not judged by its observations ({check.__name__}): {e}", flush=True)
            continue
        finally:
            env.close()
        if row:
            out[c.tag] = row
    return out


def coverage_markdown(cov):
    """generation.md's second table: every spread file judged by its observations (spread_check)."""
    if not cov:
        return ""
    lines = ["", "## Judged by the observations (MPE spread)", "",
             "Means over episodes, from each file's observations alone with the env's reward terms "
             "(MPEEnv.spread_terms_from_obs): the stored return (Σr̂ for generated files), the return the env pays "
             "for the observed positions, colliding agent pairs per episode, coverage −Σ_l min_i dist at the first "
             "and last observation and its gain (Fig. 4c); the landmarks are placed by agent 0's offsets, and the "
             "view gap (MPEEnv.view_gap_from_obs) is how far the other agents' offsets place them or their teammates "
             "(mean largest distance; 0 for real data).",
             "Per segment (the H-1 observations a generated segment adds), the largest view gap: its 10/50/90% "
             "quantiles and the fraction of segments a `max_view_gap` of 0.15 (an agent's radius) or 0.3 would pass.",
             "Where the agents end (last observation): landmarks claimed, how many different landmarks are some "
             "agent's nearest (n: each agent has its own; 1: all on one), the median distance of the closest pair, "
             "and the median distance of an agent to its nearest landmark.",
             "", "| cell | data | stored return | return from the observations | collisions | coverage first | last | "
             "gain | landmarks claimed | closest pair | to its landmark | view gap | "
             "segment view gap q10 / q50 / q90 | segments ≤ 0.15 / ≤ 0.3 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tag, row in cov.items():
        for name, r in row.items():
            lines.append(f"| {tag} | {DATASET_NAMES.get(name, name)} | {r['stored_return']:.1f} | "
                         f"{r['obs_return']:.1f} | {r['collisions']:.1f} | {r['first']:.2f} | {r['last']:.2f} | "
                         f"{r['gain']:.2f} | {r['claimed']:.2f} | {r['end_pair']:.2f} | "
                         f"{r['end_reach']:.2f} | {r['view_gap']:.3f} | "
                         f"{' / '.join(f'{q:.2f}' for q in r['segment_gap']['quantiles'])} | "
                         f"{' / '.join(f'{v:.3f}' for v in r['segment_gap']['at_or_under'].values())} |")
    return "\n".join(lines) + "\n"


def cn_figure(cov, out):
    if not cov:
        return []
    from analysis import plots

    plt = plots._pyplot()
    fig, axes = plt.subplots(1, len(cov), figsize=(5.5 * len(cov), 3.6), squeeze=False)
    for ax, (tag, row) in zip(axes[0], cov.items()):
        names = list(row)
        for j, key in enumerate(("first", "last", "gain")):
            ax.bar([i + (j - 1) * 0.27 for i in range(len(names))], [row[x][key] for x in names], 0.27, label=key)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(f"{tag}: coverage −Σ_l min_i dist", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return plots.save(fig, out, "cn_score")


def scaling(data):
    """{learner: {dataset: [(N, normalised gain over original)]}} over the spread cells."""
    out = {}
    for c in data["cells"].values():
        if c["env"] != "mpe_spread":
            continue
        for learner, row in c["scores"].items():
            base = normalised(row.get("original"))
            for ds in data["datasets"]:
                if ds != "original" and base is not None and normalised(row.get(ds)) is not None:
                    out.setdefault(learner, {}).setdefault(ds, []).append((c["n_agents"], normalised(row[ds]) - base))
    return out


def scaling_figure(gains, out):
    if not gains:
        return []
    from analysis import plots

    plt = plots._pyplot()
    fig, axes = plt.subplots(1, len(gains), figsize=(4 * len(gains), 3.2), squeeze=False)
    for ax, (learner, rows) in zip(axes[0], gains.items()):
        for ds, points in rows.items():
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=DATASET_NAMES[ds])
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xticks(sorted({n for points in rows.values() for n, _ in points}))  # the Ns run, no fractions
        ax.set_xlabel("N agents")
        ax.set_title(learner, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalised score − original's")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Gain over the original one-expert data vs N (MPE spread)", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out, "scaling")


def report(plan, a):
    os.makedirs(a.out, exist_ok=True)
    state = State(plan)
    data = build_table(plan, state, paper_table(a.paper))
    data.update(provenance())
    data["coverage"] = coverage_table(plan, state)
    data["grid"] = grid_table(plan, state)
    data["scaling"] = scaling(data)
    labels_md, data["labels"] = labels_markdown(plan, state)
    gen_md, data["generation"] = generation_markdown(plan, state)
    gen_md += coverage_markdown(data["coverage"])
    gen_md += grid_markdown(data["grid"])
    md = markdown(data) + f"\n{data['date']}, commit {data['commit']}, {data['machine']}.\n"
    for name, text in (("table.md", md), ("labels.md", labels_md), ("generation.md", gen_md)):
        with open(os.path.join(a.out, name), "w") as f:
            f.write(text)
    with open(os.path.join(a.out, "table.json"), "w") as f:
        json.dump(data, f, indent=2)
    figures = cn_figure(data["coverage"], a.out) + scaling_figure(data["scaling"], a.out)
    print(md, flush=True)
    print(f"wrote {', '.join(os.path.join(a.out, x) for x in ('table.md', 'table.json', 'labels.md', 'generation.md'))}"
          + (f", {', '.join(figures)}" if figures else ""), flush=True)
    return data


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    from utils.cli import parse_updates

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=None, help="env configs (default mpe_spread lbf_8x8_2p_2f_coop; "
                                                           "mpe_world optional)")
    p.add_argument("--n-agents", nargs="+", type=int, default=None,
                   help="N of the envs that take it (mpe_spread; default 3 4 5); the others run at their own N")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="learner seeds (default 1 2 3); the label and "
                                                                      "augment runs use the first")
    p.add_argument("--preset", default="cpu", choices=("cpu", "paper"), help="augment_preset (default cpu)")
    p.add_argument("--labeler", default="noisy_oracle", choices=("noisy_oracle", "oracle", "llm"),
                   help="the segment labels codi distils (default noisy_oracle at --oracle-accuracy)")
    p.add_argument("--oracle-accuracy", type=float, default=None,
                   help="noisy_oracle's probability of naming the expert (default 0.8; only with --labeler "
                        "noisy_oracle)")
    p.add_argument("--label-with", nargs="*", default=[], metavar="KEY=VALUE",
                   help="updates of the label runs (e.g. llm.backend=local label_segments=200)")
    p.add_argument("--augment-with", nargs="*", default=[], metavar="KEY=VALUE",
                   help="updates of the augment runs (e.g. delta=0.2 augment_train_steps=5000)")
    p.add_argument("--augment-gpus", type=float, default=0.0,
                   help="GPUs per augment run (e.g. 1 with --preset paper; the sweep sets use_cuda from it)")
    p.add_argument("--privileged", action="store_true", help="add codi_privileged (ground-truth labels) as a row")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    p.add_argument("--scaling-learners", nargs="+", default=None, choices=list(LEARNERS),
                   help="the learners of the cells of another N than the env config's (spread N = 4, 5; the issue "
                        "asks for BC and 50%%BC at least there); default: --learners")
    p.add_argument("--steps", type=int, default=None,
                   help="gradient steps of each learner run (default: config/sweeps/codi_learn.yaml's, 3000)")
    p.add_argument("--dataset-episodes", type=int, default=None,
                   help="episodes per dataset (scripts/reference_datasets.py --episodes; default its 1000)")
    p.add_argument("--dataset-t-max", type=int, default=None,
                   help="behaviour policy training steps (scripts/reference_datasets.py --t-max; smoke runs)")
    p.add_argument("--no-collect", action="store_true",
                   help="use the datasets in <results>/datasets/<env label>/ as they are (no reference_datasets.py)")
    p.add_argument("--quick", action="store_true", help=f"spread N=3, seed 1, {QUICK['steps']} learner steps, "
                                                        f"{QUICK['augment_with']}: a plumbing check")
    p.add_argument("--paper", default=None, help="the paper's text (default ../shared/papers/000_*.txt)")
    study.add_ray_options(p)  # --jobs, --address, --num-cpus, --results
    p.add_argument("--out", default=None, help="default results/bench/codi/<preset>")
    p.add_argument("--check", action="store_true", help="build and check every sweep, print the plan, run nothing")
    p.add_argument("--report-only", action="store_true", help="tables and figures from the runs so far")
    p.add_argument("--reevaluate", type=int, default=0, metavar="N",
                   help="before the tables, evaluate every finished learner run's final model again on N greedy "
                        "episodes (--jobs at a time; kept for the next call) and score runs by that (default 0: off)")
    p.add_argument("extra", nargs="*", help="`with` updates of every learner run, e.g. test_nepisode=16")
    a = p.parse_args(argv)
    if a.reevaluate < 0:
        p.error(f"--reevaluate must be >= 0 (0: off), got {a.reevaluate}")
    for option, values in (("--n-agents", a.n_agents), ("--seeds", a.seeds)):
        if values and len(set(values)) != len(values):
            p.error(f"{option} {' '.join(map(str, values))} repeats a value: each once")
    if a.n_agents and min(a.n_agents) < 1:
        p.error(f"--n-agents must be >= 1, got {a.n_agents}")
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps must be >= 1 (gradient steps of each learner run), got {a.steps}")
    a.results = os.path.abspath(a.results)
    # in LEARNERS' order, so the same set names the same learn sweeps however it is spelled
    a.learners = [x for x in LEARNERS if x in a.learners]
    a.scaling_learners = a.scaling_learners and [x for x in LEARNERS if x in a.scaling_learners]
    a.envs = a.envs or (QUICK["envs"] if a.quick else ["mpe_spread", "lbf_8x8_2p_2f_coop"])
    a.n_agents = a.n_agents or (QUICK["n_agents"] if a.quick else [3, 4, 5])
    a.seeds = a.seeds or (QUICK["seeds"] if a.quick else [1, 2, 3])
    a.steps = a.steps or (QUICK["steps"] if a.quick else None)
    a.out = os.path.abspath(a.out or os.path.join(RESULTS_ROOT, "bench", "codi", a.preset))
    try:  # KEY=VALUE tokens as src/main.py reads them: a malformed one is an option error, not a traceback
        a.with_ = flatten(parse_updates(a.extra)) if a.extra else {}
        a.label_with = flatten(parse_updates(a.label_with)) if a.label_with else {}
        a.augment_with = {**(QUICK["augment_with"] if a.quick else {}),
                          **(flatten(parse_updates(a.augment_with)) if a.augment_with else {})}
    except ConfigError as e:
        p.error(str(e))
    if a.oracle_accuracy is not None and a.labeler != "noisy_oracle":
        p.error(f"--oracle-accuracy is noisy_oracle's setting; --labeler {a.labeler} would ignore it: drop it, or "
                f"use --labeler noisy_oracle")
    if a.labeler == "noisy_oracle":
        a.oracle_accuracy = 0.8 if a.oracle_accuracy is None else a.oracle_accuracy
        if not 0.0 <= a.oracle_accuracy <= 1.0:
            p.error("--oracle-accuracy must be in [0, 1]")
        a.labeler_tag = f"noisy{round(a.oracle_accuracy * 100):02d}"
        a.label_updates = {"labeler": "noisy_oracle", "oracle_accuracy": a.oracle_accuracy}
        a.labeler_desc = (f"noisy_oracle at accuracy {a.oracle_accuracy:g} (`{a.labeler_tag}`; --oracle-accuracy, "
                          f"meant to be the LLM labeler's measured accuracy: labels.md lists every labeler run)")
    else:
        a.labeler_tag, a.label_updates = a.labeler, {"labeler": a.labeler}
        a.labeler_desc = f"{a.labeler}" + (f" ({', '.join(f'{k}={v}' for k, v in a.label_with.items())})"
                                           if a.label_with else "")
    if a.label_with:  # other label settings are other labels: their own label name, study copy and augment runs
        a.labeler_tag += "-" + hashlib.sha1(json.dumps(a.label_with, sort_keys=True).encode()).hexdigest()[:6]
    return a


def print_plan(plan, state):
    """Print every sweep with its trial count and how many of them completed; returns the trial counts per phase,
    how many wait for an input, and the [(phase, trial)] left to run."""
    counts, pending, left = {}, 0, []
    # label and augment: the plan's every run counts; the sweep printed holds only those no sweep completed yet
    for phase, total, todo in (("label", len(plan.cells), len(state.todo_label)),
                               ("augment", len(plan.cells) * len(plan.trained), len(state.todo_augment))):
        counts[phase] = total
        if todo < total:
            print(f"  {phase:<8} {'all cells':<10} {total - todo} of {total} runs completed (results/sweeps/ "
                  f"manifests)" + ("" if todo else ": nothing to run"), flush=True)
    for phase, tag, base, diff, wait in all_sweeps(plan, state):
        name, trials = check_sweep(base, diff, plan.a.results)
        manifest = load_json(os.path.join(plan.a.results, "sweeps", name, "manifest.json")) or {}
        done = {r.get("id") for r in manifest.get("trials", []) if r.get("status") == "COMPLETED"}
        todo = [t for t in trials if t["id"] not in done]
        if phase not in ("label", "augment"):
            counts[phase] = counts.get(phase, 0) + len(trials)
        pending += len(trials) if wait else 0
        left += [(phase, t) for t in todo]
        print(f"  {phase:<8} {tag or 'all cells':<10} {name}: {len(trials)} trials"
              + (f", {len(trials) - len(todo)} completed" if len(todo) < len(trials) else "")
              + (" (input pending: built with a placeholder path)" if wait else ""), flush=True)
    return counts, pending, left


def main(argv=None):
    a = parse_args(argv)
    try:
        plan = Plan(a)
        state = State(plan)
        for c in plan.cells:
            print(f"{c.tag}: {c.env}{' ' + str(c.env_args) if c.env_args else ''} (N = {c.n}, label {c.label}); data "
                  f"{c.source}, labels in {c.copy}" + ("; fixed N" if c.env not in N_ARG else ""), flush=True)
        counts, pending, left = print_plan(plan, state)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    cpu, wall = estimate(plan, left)
    jobs = a.jobs or a.num_cpus or os.cpu_count()
    print(f"{sum(counts.values())} trials ({', '.join(f'{k} {v}' for k, v in counts.items())}; {pending} wait for "
          f"inputs; {len(left)} left to run) + {len(plan.cells)} dataset recipe(s). Estimated CPU left: data "
          f"{cpu['data'] / 3600:.1f} h, augment {cpu['augment'] / 3600:.1f} h, learners {cpu['learn'] / 3600:.1f} h; "
          f"about {wall / 3600:.1f} h wall with {jobs} trial(s) at a time (per-run times measured on 2 cores, two "
          f"runs at a time: bench/codi_table.py's constants)", flush=True)
    if a.check:
        return 0
    code = 0 if a.report_only else run_study(plan, a)
    if code == 2:
        return code
    report(plan, a)
    return code


if __name__ == "__main__":
    sys.exit(main())
