"""Benches that are studies: sweep files (config/sweeps/) run by src/sweep.py, then one src/results.py call.

A bench only turns its command-line options into changes of a sweep file: a derived sweep file that `inherit:`s
it (written to a temporary folder; the sweep's manifest keeps the whole spec), named after the file, plus a short
hash of the changes when there are any (`qllm_lbf`, `qllm_lbf-1a2b3c4d`). A sweep whose folder already holds a
manifest is finished with `--resume` (its completed trials are kept) instead of started again. Running, retrying,
grouping, statistics, tables and plots are src/sweep.py's and src/results.py's; the bench then copies the report's
table to <out>/<name>.md and its CSV rows to <out>/<name>.json (the paths every bench writes).
"""
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sweeps.spec import flatten, load_sweep, sweep_path  # noqa: E402

RESULTS_ROOT = os.path.join(ROOT, "results")


def add_ray_options(parser):
    """The options a bench passes on to src/sweep.py."""
    parser.add_argument("--jobs", type=int, default=None, help="at most N trials at once (src/sweep.py "
                                                                "--max-concurrent; default: as the CPUs allow)")
    parser.add_argument("--address", default=None, help="join a running Ray cluster (src/sweep.py --address)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--results", default=RESULTS_ROOT,
                        help="local_results_path of every trial: Sacred runs and the sweep folders go under it "
                             "(default results/)")


def changes(base, algs=None, envs=None, seeds=None, with_=None, grid=None):
    """What differs from the sweep file `base`: {key: value} over algs, envs, seeds and the `with` / `grid` keys
    (dotted), only where the bench's options change them."""
    spec = load_sweep(base)
    out = {}
    for key, value in (("algs", algs), ("envs", envs), ("seeds", seeds)):
        if value is not None and value != spec[key]:
            out[key] = value
    for section, values in (("with", with_), ("grid", grid)):
        old = flatten(spec[section])
        for key, value in flatten(values).items():
            if old.get(key) != value:
                out.setdefault(section, {})[key] = value
    return out


def sweep_name(base, diff):
    """The name (and results/sweeps/ folder) of the sweep that runs `base` with `diff`: base plus a hash of diff."""
    return base if not diff else f"{base}-{hashlib.sha1(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:8]}"


def derive(base, diff, results_root, folder):
    """Write the sweep file that runs `base` with `diff` (changes()) and its trials' outputs under results_root;
    returns (path, name)."""
    name = sweep_name(base, diff)
    data = {"inherit": os.path.abspath(sweep_path(base)), "name": name,
            **{k: v for k, v in diff.items() if k not in ("with", "grid")},
            "with": {**diff.get("with", {}), "local_results_path": os.path.abspath(results_root)}}
    if "grid" in diff:
        data["grid"] = diff["grid"]
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        json.dump(data, f, indent=2)  # JSON is YAML
    return path, name


def run(cmd):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def run_sweeps(studies, args):
    """Run each (base sweep file, changes) as a sweep (resuming one that was started before); returns (exit code,
    sweep folders). A config error stops at once; trials that failed leave exit code 1 and the rest of the work."""
    code, folders = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for base, diff in studies:
            path, name = derive(base, diff, args.results, tmp)
            folder = os.path.join(os.path.abspath(args.results), "sweeps", name)
            cmd = [sys.executable, os.path.join(SRC, "sweep.py")]
            if os.path.isfile(os.path.join(folder, "manifest.json")):
                print(f"{folder} exists: finishing that sweep (--resume keeps its completed trials); delete it for "
                      f"a fresh one", flush=True)
                cmd += [folder, "--resume"]
            else:
                cmd.append(path)
            for option, value in (("--max-concurrent", args.jobs), ("--address", args.address),
                                  ("--num-cpus", args.num_cpus)):
                if value is not None:
                    cmd += [option, str(value)]
            rc = run(cmd)
            if rc not in (0, 1):
                return rc, folders
            code = max(code, rc)
            folders.append(folder)
    return code, folders


def results(folders, out, name, options=()):
    """src/results.py over the sweep folders into <out>/<name>/, then <out>/<name>.md (its table) and
    <out>/<name>.json (its CSV rows and where everything is); returns the exit code."""
    report = os.path.join(os.path.abspath(out), name)
    cmd = [sys.executable, os.path.join(SRC, "results.py"), *folders, "--out", report, *options]
    rc = run(cmd)
    if rc != 0:
        return rc
    with open(os.path.join(report, "scores.md")) as f:
        markdown = f.read()
    data = {"command": " ".join(cmd), "sweeps": folders, "report": report,
            "scores": read_csv(os.path.join(report, "scores.csv")),
            "aggregate": read_csv(os.path.join(report, "aggregate.csv"))}
    if os.path.isfile(os.path.join(report, "study.md")):  # results.py --study: the study's table first
        with open(os.path.join(report, "study.md")) as f:
            markdown = f"{f.read().rstrip()}\n\n{markdown}"
        with open(os.path.join(report, "study.json")) as f:
            data["study"] = json.load(f)["rows"]
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(f"{markdown.rstrip()}\n\nSweeps: {', '.join(folders)}; figures and CSVs: {report}\n")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    print(f"wrote {os.path.join(out, name)}.md and .json", flush=True)
    return 0


def read_csv(path):
    def cell(text):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text or None

    with open(path, newline="") as f:
        return [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
