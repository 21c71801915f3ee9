"""The final models of finished sweeps evaluated again, on more episodes than their runs did.

A sweep's table reads each run's last evaluation, often 32 episodes; where returns vary a lot from episode to episode
(MPE spread N = 3: per-episode std 27-54) that leaves a standard error as large as the gaps between methods. For
every COMPLETED trial with a model folder this runs src/main.py with the trial's own arguments (spec.trial_argv)
plus evaluate=True, checkpoint_path=<its model folder>, test_nepisode=<episodes> (greedy unless sampled), with its
Sacred runs in a scratch results folder (<out>/results) so that the sweep's own runs stay as they were. Trials with
the same seed meet the same start states where the env draws them from the seed and its steps are deterministic (MPE
spread), so there methods compare paired.

<out>/reevaluate.json (rewritten after every trial, so a failure keeps what is done) holds one row per trial: sweep,
trial, alg, seed, sacred_run (the trial's run that counts: src/results.py --finals matches runs by it), the mean, std
and standard error of test_return_mean, every test stat of its final line (`metrics`: the env's own too, e.g.
SMAX's test_battle_won_mean, which --finals then replaces with `--metric`), the episodes run and requested, the
policy and the checkpoint step loaded.
A row whose trial, model folder, Sacred run, request and final step are unchanged is reused, not run again (one
without `metrics`, written before they were kept, runs again); rows of
other sweeps in the file stay.
"""
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

from sweeps.manifest import model_dir, read_manifest
from sweeps.spec import trial_argv
from utils.files import load_json, write_json_atomic, write_text_atomic
from utils.paths import REPO_ROOT, SRC_DIR

ROWS = "reevaluate.json"
# run/loop.py's log_final_evaluation: "Final evaluation (t_env 10000, 256 greedy episodes): test_return_mean -1.0, ..."
FINAL = re.compile(r"Final evaluation \(\w+ (\d+), (\d+) (greedy|sampled|epsilon-greedy \([^)]*\)) episodes\): "
                   r"test_return_mean (-?[\d.]+|nan), test_return_std ([\d.]+|nan)")
METRIC = re.compile(r"\b(test_\w+) (-?\d[\d.]*(?:e[-+]?\d+)?|nan|-?inf)\b")  # every "name value" of that line


def evaluation_argv(trial, episodes, sampled, results):
    overrides = {**trial["overrides"], "evaluate": True, "test_nepisode": episodes, "test_greedy": not sampled,
                 "local_results_path": results, "use_tensorboard": False, "save_model": False}
    return trial_argv({**trial, "overrides": overrides}, f"reevaluate:{trial['id']}", trial["model_dir"])


def evaluate_trial(trial, episodes, sampled, results):
    """The trial's final model over `episodes` test episodes: {mean, std, metrics (every test stat of the final
    line), episodes (as run: the runner may round them to its batch), policy, step (of the checkpoint loaded)}.
    RuntimeError with the run's last lines when it fails, when it loaded an earlier checkpoint than the trial's last
    (the final one is missing), or when `sampled` meets an algorithm whose test policy is not sampled
    (epsilon-greedy learners ignore test_greedy)."""
    cmd = [sys.executable, os.path.join(SRC_DIR, "main.py"), *evaluation_argv(trial, episodes, sampled, results)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    hit = FINAL.search(text)
    if proc.returncode or not hit:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"the evaluation of {trial['id']} failed (exit {proc.returncode}):\n{tail}")
    step, policy = int(hit.group(1)), hit.group(3)
    if trial.get("t_env") is not None and step < int(trial["t_env"]):
        raise RuntimeError(f"the evaluation of {trial['id']} loaded the checkpoint of step {step}, but the trial ended "
                           f"at {trial['t_env']}: its final checkpoint in {trial['model_dir']} is missing")
    if sampled and policy != "sampled":
        raise RuntimeError(f"{trial['id']} ({trial['alg']}) tests with a {policy} policy, which test_greedy does not "
                           f"change: drop --sampled for this sweep")
    mean, std, ran = float(hit.group(4)), float(hit.group(5)), int(hit.group(2))
    if not math.isfinite(mean):
        raise RuntimeError(f"the evaluation of {trial['id']} gave test_return_mean {mean}: its final model "
                           f"({trial['model_dir']}) has no score to replace the last evaluation with")
    end = text.find("\n", hit.start())
    line = text[hit.start():end if end >= 0 else None]
    metrics = {k: float(v) for k, v in METRIC.findall(line)}
    return {"mean": mean, "std": std, "se": std / ran ** 0.5, "metrics": metrics, "episodes": ran, "policy": policy,
            "step": step}


def finished_trials(folder):
    """(sweep name, [COMPLETED trials with a model folder, a Sacred run and a policy that played], how many others)
    of a sweep folder; ValueError when it holds no manifest."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"{folder} holds no readable manifest.json: pass a sweep folder (results/sweeps/<name>)")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("name"), str) \
            or not isinstance(manifest.get("trials"), list):
        raise ValueError(f"{folder}/manifest.json is not a sweep manifest (an object with name and trials, as "
                         f"src/sweep.py writes it)")
    done = []
    for t in manifest["trials"]:
        if t.get("status") == "COMPLETED" and not t.get("model_dir"):  # the driver fills it in when the sweep ends:
            t = dict(t, model_dir=model_dir(t))                         # a sweep still running has only the status
        if t.get("status") == "COMPLETED" and t.get("model_dir") and t.get("sacred_run") and plays(t):
            done.append(t)
    return manifest["name"], done, len(manifest["trials"]) - len(done)


def plays(trial):
    """False for a trial whose learner trains no policy (`trains_actor`: MARL-SL step 1), read from its Sacred run's
    config (runs from before learners declared it logged test episodes of the untrained actor), or whose run logged
    no test episodes."""
    from learners import REGISTRY  # lazy: torch only when a sweep has finished trials

    config = load_json(os.path.join(trial["sacred_run"], "config.json")) or {}
    learner = REGISTRY.get(config.get("learner"))
    if learner is not None and not learner.trains_actor:
        return False
    info = load_json(os.path.join(trial["sacred_run"], "info.json"))
    return info is None or "test_return_mean" in info


def reusable(row, trial, episodes, sampled):
    return (row.get("requested") == episodes and row.get("sampled") == sampled and "metrics" in row
            and row.get("model_dir") == trial["model_dir"] and row.get("sacred_run") == trial["sacred_run"]
            and row.get("step") == trial.get("t_env"))


def reevaluate_sweeps(folders, episodes, out, sampled=False, jobs=1, log=print):
    """Rows of every finished trial of the sweep folders (see the module's doc), `jobs` evaluations at a time;
    writes <out>/reevaluate.json and .md after each (rows of other sweeps already there are kept; the .md names the
    scripts/reevaluate.py line that makes them). A failed evaluation is raised after the others have finished and been
    written."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):  # found now, not when the first evaluation is written
        raise ValueError(f"--out {out} is a file: give a folder (it gets reevaluate.json and reevaluate.md)")
    command = (f"python scripts/reevaluate.py {' '.join(folders)} --episodes {episodes}"
               + (" --sampled" if sampled else ""))
    old = {(r["sweep"], r["trial"]): r for r in load_json(os.path.join(out, ROWS)) or []}
    keys, todo, rows, names = [], [], {}, set()  # keys: every finished trial, in sweep and manifest order
    for folder in folders:
        name, done, skipped = finished_trials(folder)
        names.add(name)
        log(f"{name}: {len(done)} finished trials with a model folder and a Sacred run"
            + (f" ({skipped} others skipped)" if skipped else ""))
        for t in done:
            key = (name, t["id"])
            keys.append(key)
            prev = old.get(key)
            if prev and reusable(prev, t, episodes, sampled):
                rows[key] = prev
            else:
                todo.append((key, t))
    if rows:
        log(f"  {len(rows)} trial(s) already evaluated on {episodes} episodes in {out}: kept")
    others = [r for k, r in old.items() if k[0] not in names]  # other sweeps' rows stay in the file

    def one(key, t):
        got = evaluate_trial(t, episodes, sampled, os.path.join(out, "results"))
        return {"sweep": key[0], "trial": key[1], "alg": t["alg"], "seed": t["seed"], **got, "requested": episodes,
                "sampled": sampled, "model_dir": t["model_dir"], "sacred_run": t["sacred_run"]}

    def ordered():
        return [rows[k] for k in keys if k in rows]

    errors = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:  # the threads only wait on src/main.py processes
        futures = {pool.submit(one, key, t): key for key, t in todo}
        for future in as_completed(futures):
            try:
                row = future.result()
            except RuntimeError as e:
                errors.append(str(e))
                log(f"  {futures[future][1]}: FAILED ({str(e).splitlines()[0]})")
                continue
            rows[futures[future]] = row
            log(f"  {row['trial']}: test_return_mean {row['mean']:.2f} (std {row['std']:.2f}, se {row['se']:.2f}, "
                f"{row['episodes']} {row['policy']} episodes, step {row['step']})")
            write(out, ordered() + others, command)  # after every trial: a later failure keeps the rows done
    write(out, ordered() + others, command)
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(todo)} evaluations failed (the others are in {out}):\n\n"
                           + "\n\n".join(errors))
    return ordered()


def write(out, rows, command):
    os.makedirs(out, exist_ok=True)
    write_json_atomic(os.path.join(out, ROWS), rows)
    lines = [f"Final models evaluated again (`{command}`).", "",
             "| sweep | trial | seed | step | episodes | policy | test_return_mean | std | standard error |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['sweep']} | {r['trial']} | {r['seed']} | {r['step']} | {r['episodes']} | {r['policy']} | "
              f"{r['mean']:.2f} | {r['std']:.2f} | {r['se']:.2f} |" for r in rows]
    write_text_atomic(os.path.join(out, "reevaluate.md"), "\n".join(lines) + "\n")
