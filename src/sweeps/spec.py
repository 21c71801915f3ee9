"""Sweep files and their trials.

A sweep file (config/sweeps/<name>.yaml, or any path) says which runs to make:

    inherit: other_sweep          # start from config/sweeps/other_sweep.yaml (mappings merge key by key)
    algs: [qmix, vdn]             # every alg x every env ...
    envs: [lbf, climbing]
    entries:                      # ... and/or entries of their own (alg, env, fixed overrides, their own grid)
      - {alg: qllm, env: lbf, name: qllm_shipped, with: {t_max: 400000}, grid: {lr: [0.0005]}}
    with: {t_max: 400000}         # overrides of every trial (nested or dotted keys: env_args.time_limit)
    grid: {lr: [0.0005, 0.001]}   # axes: every combination of values, for every entry
    seeds: 5                      # 0..4, or a list [1, 2, 3]
    cpus_per_trial: 1             # Ray resources of one trial; torch_threads follows the CPUs
    gpus_per_trial: 0             # fractional is fine (0.25: four trials per GPU); use_cuda follows it
    metric: test_return_mean      # reported to Ray Tune and shown in progress lines
    mode: max
    retries: 0                    # re-runs of a failed trial from its latest checkpoint (not when the same
                                  # error would repeat: sweeps.trial)
    max_concurrent: null          # at most this many trials at once (null: as many as resources allow)

Each trial is `python src/main.py --config=<alg> --env-config=<env> with <overrides> seed=<seed>` with the sweep's
`label` and resources added; `expand` builds and `validate` checks every trial's config exactly as src/main.py
does (utils.config.build_config, run.preflight.check_config) before anything starts.
"""
import itertools
import os
import re
from collections.abc import Mapping

from utils.cli import parse_updates
from utils.config import ConfigError, read_yaml, recursive_update, suggest
from utils.paths import CONFIG_DIR, REPO_ROOT, env_label, results_path
from utils.runs import short_value

SWEEP_DIR = os.path.join(CONFIG_DIR, "sweeps")
DEFAULTS = {
    "name": None, "description": "", "algs": [], "envs": [], "entries": [], "with": {}, "grid": {}, "seeds": 1,
    "cpus_per_trial": 1, "gpus_per_trial": 0, "metric": "test_return_mean", "mode": "max", "retries": 0,
    "max_concurrent": None,
}
ENTRY_KEYS = ("alg", "env", "name", "with", "grid", "seeds", "cpus_per_trial", "gpus_per_trial")
# keys the sweep sets on every trial (from its resources and identity); an entry's own `with` may still set the first
# two explicitly
MANAGED = ("torch_threads", "use_cuda", "label", "seed", "checkpoint_path")


def sweep_path(name_or_path):
    """The file of a sweep: a path as given, or config/sweeps/<name>.yaml."""
    if os.path.isfile(name_or_path):
        return name_or_path
    path = os.path.join(SWEEP_DIR, f"{name_or_path}.yaml")
    if os.path.isfile(path):
        return path
    valid = sorted(f[:-5] for f in os.listdir(SWEEP_DIR) if f.endswith(".yaml")) if os.path.isdir(SWEEP_DIR) else []
    raise ConfigError(f"no sweep file '{name_or_path}' (a path, or a name in config/sweeps/: {', '.join(valid)})")


def load_sweep(name_or_path, _seen=()):
    """The sweep file's settings over DEFAULTS, `inherit:` resolved (a mapping merges key by key, a list replaces)."""
    path = os.path.abspath(sweep_path(name_or_path))
    if path in _seen:
        raise ConfigError(f"sweep inherit cycle {' -> '.join((*_seen, path))}")
    data = dict(read_yaml(path))
    unknown = [k for k in data if k not in DEFAULTS and k != "inherit"]
    if unknown:
        raise ConfigError(f"{os.path.relpath(path, REPO_ROOT)}: unknown sweep key '{unknown[0]}'."
                          f"{suggest(unknown[0], list(DEFAULTS) + ['inherit'])} Valid: {', '.join(DEFAULTS)}, inherit")
    base = data.pop("inherit", None)
    if base:
        parent = load_sweep(os.path.join(os.path.dirname(path), f"{base}.yaml")
                            if os.path.isfile(os.path.join(os.path.dirname(path), f"{base}.yaml")) else base,
                            (*_seen, path))
        parent.pop("name", None)
        spec = recursive_update(parent, data)
    else:
        spec = recursive_update(DEFAULTS, data)
    if not spec.get("name"):
        spec["name"] = os.path.splitext(os.path.basename(path))[0]
    spec["file"] = path
    return spec


def inline_sweep(algs, envs, seeds, grid_tokens, with_tokens, name=None, **settings):
    """The sweep of the inline form (`--config=qmix,vdn --env-config=lbf --seeds 5 --grid lr=[...] with ...`)."""
    grid = {}
    for tok in grid_tokens or []:
        axis = flatten(parse_updates([tok]))
        again = sorted(set(axis) & set(grid))
        if again:
            raise ConfigError(f"--grid {again[0]}=... is given twice: put every value in one list, e.g. "
                              f"--grid {again[0]}=[0.1,0.2,0.3]")
        grid.update(axis)
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"--grid {key}=... needs a non-empty list of values, e.g. --grid {key}=[0.1,0.2]")
    spec = recursive_update(DEFAULTS, {k: v for k, v in settings.items() if v is not None})
    spec.update({"algs": list(algs), "envs": list(envs), "seeds": seeds, "grid": grid,
                 "with": flatten(parse_updates(with_tokens)) if with_tokens else {}})
    spec["name"] = name or "_".join(["inline", "+".join(algs), "+".join(envs)])
    spec["file"] = None
    return spec


def flatten(d, prefix=""):
    """Nested mappings as dotted keys ({'env_args': {'time_limit': 50}} -> {'env_args.time_limit': 50})."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def token(key, value):
    """`key=value` as Sacred parses it back to `value` (Python literals; strings quoted)."""
    if isinstance(value, Mapping):
        value = dict(value)
    return f"{key}={value!r}"


def seed_list(seeds, where):
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list, tuple)):
        raise ConfigError(f"{where}: seeds must be a count (5 = seeds 0..4) or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"{where}: seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    return list(seeds)


def check_settings(spec):
    """The sweep-wide settings: types and ranges, the name a folder name (it becomes results/sweeps/<name>)."""
    where = f"sweep {spec['name']}"
    name = str(spec["name"])
    if not name or name in (".", "..") or _safe(name) != name:
        raise ConfigError(f"{where}: the name must be a folder name of letters, digits and _ . = + - (it becomes "
                          f"results/sweeps/<name>), got {name!r}")
    retries = spec.get("retries")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{where}: retries must be an integer >= 0 (Ray's -1, retry forever, is not offered), "
                          f"got {retries!r}")
    most = spec.get("max_concurrent")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise ConfigError(f"{where}: max_concurrent must be null (as resources allow) or an integer >= 1, got {most!r}")
    if spec.get("mode") not in ("max", "min"):
        raise ConfigError(f"{where}: mode must be max or min, got {spec.get('mode')!r}")
    if not isinstance(spec.get("metric"), str) or not spec["metric"]:
        raise ConfigError(f"{where}: metric must name an info.json key (e.g. test_return_mean), got "
                          f"{spec.get('metric')!r}")
    for key in ("with", "grid"):
        if not isinstance(spec.get(key) or {}, Mapping):
            raise ConfigError(f"{where}: `{key}` must be a mapping of config keys, got {spec.get(key)!r}")
    for key in ("algs", "envs"):
        if not isinstance(spec.get(key) or [], list):
            raise ConfigError(f"{where}: {key} must be a list (e.g. [{spec.get(key)}]), got {spec.get(key)!r}")


def entries(spec):
    """[(entry index, entry)]: `entries` first, then every alg x env of `algs` / `envs`."""
    check_settings(spec)
    out = []
    where = f"sweep {spec['name']}"
    if not isinstance(spec.get("entries") or [], list):
        raise ConfigError(f"{where}: entries must be a list of {{alg, env, with, grid}} mappings")
    for i, entry in enumerate(spec.get("entries") or []):
        if not isinstance(entry, Mapping) or "alg" not in entry or "env" not in entry:
            raise ConfigError(f"{where}: entry {i + 1} must be a mapping with alg and env, got {entry!r}")
        unknown = [k for k in entry if k not in ENTRY_KEYS]
        if unknown:
            raise ConfigError(f"{where}: entry {i + 1} ({entry['alg']} on {entry['env']}): unknown entry key "
                              f"'{unknown[0]}'.{suggest(unknown[0], list(ENTRY_KEYS))} Valid: {', '.join(ENTRY_KEYS)}")
        out.append(dict(entry))
    algs, envs = spec.get("algs") or [], spec.get("envs") or []
    if bool(algs) != bool(envs):
        raise ConfigError(f"{where}: algs and envs go together (every alg runs on every env); give both")
    out += [{"alg": a, "env": e} for a in algs for e in envs]
    if not out:
        raise ConfigError(f"{where}: no trials: give algs and envs, or entries")
    return list(enumerate(out))


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.=+\-]", "_", str(text))


def expand(spec):
    """Every trial of the sweep, in launch order (seed outermost, so that early results cover every config): a dict
    with id, index, label, alg, env, entry, grid (this trial's values), overrides (the `with` updates, dotted), seed,
    resources. Configs are not built here (validate)."""
    trials = []
    for i, entry in entries(spec):
        where = f"sweep {spec['name']}, entry {i + 1} ({entry['alg']} on {entry['env']})"
        fixed = {**flatten(spec.get("with")), **flatten(entry.get("with"))}
        grid = {**flatten(spec.get("grid")), **flatten(entry.get("grid"))}
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"{where}: grid axis '{key}' needs a non-empty list of values, got {values!r}")
        for part, keys in (("with", fixed), ("grid", grid)):
            for key in keys:
                if key in ("seed", "label", "checkpoint_path"):
                    how = "seeds: for seeds" if key == "seed" else "each trial gets its own"
                    raise ConfigError(f"{where}: '{key}' is set by the sweep ({how}); remove it from `{part}`")
            for key, values in (keys.items() if part == "grid" else ()):
                repeated = [v for k, v in enumerate(values) if v in list(values)[:k]]
                if repeated:
                    raise ConfigError(f"{where}: grid axis '{key}' lists {repeated[0]!r} twice: each value once")
        seeds = seed_list(entry.get("seeds", spec.get("seeds", 1)), where)
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{where}: seeds {seeds} repeat a seed: each seed once (a repeat is the same run)")
        try:
            resources = {"cpu": float(entry.get("cpus_per_trial", spec["cpus_per_trial"])),
                         "gpu": float(entry.get("gpus_per_trial", spec["gpus_per_trial"]))}
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: cpus_per_trial and gpus_per_trial must be numbers, got "
                              f"{entry.get('cpus_per_trial', spec['cpus_per_trial'])!r} and "
                              f"{entry.get('gpus_per_trial', spec['gpus_per_trial'])!r}") from None
        if resources["cpu"] <= 0 or resources["gpu"] < 0:
            raise ConfigError(f"{where}: cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {resources}")
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            for seed in seeds:
                trials.append({"entry": i + 1, "entry_name": entry.get("name"), "alg": entry["alg"],
                               "env": entry["env"], "grid": point, "overrides": {**fixed, **point}, "seed": seed,
                               "resources": resources, "where": where})
    same = {}
    for t in trials:  # two trials that would run the same command are one run counted twice
        key = (t["alg"], t["env"], repr(sorted(t["overrides"].items())), t["seed"])
        if key in same:
            raise ConfigError(f"{t['where']} runs the same trial as {same[key]} (seed {t['seed']}, the same config): "
                              f"remove the repeat, or make the entries differ")
        same[key] = t["where"]
    trials.sort(key=lambda t: seeds_rank(t, spec))
    names = [trial_name(t) for t in trials]
    clash = {n for n in names if names.count(n) > 1}
    for index, (t, n) in enumerate(zip(trials, names)):
        t["id"] = f"e{t['entry']}-{n}" if n in clash else n
        t["index"] = index
    return trials


def seeds_rank(trial, spec):
    return (trial["seed"], trial["entry"])  # stable sort keeps grid order within (seed, entry)


def trial_name(t):
    head = t["entry_name"] or f"{t['alg']}-{t['env']}"
    grid = "".join(f"-{k.split('.')[-1]}={short_value(v)}" for k, v in t["grid"].items())
    return _safe(f"{head}{grid}-s{t['seed']}")


def trial_argv(trial, label, checkpoint_path=None):
    """The src/main.py arguments of a trial (after the program name): its config, env config and `with` updates,
    torch_threads and use_cuda from its resources unless its overrides set them, its seed and the sweep's label."""
    overrides = dict(trial["overrides"])
    overrides.setdefault("torch_threads", max(1, int(trial["resources"]["cpu"])))
    overrides.setdefault("use_cuda", trial["resources"]["gpu"] > 0)
    overrides.update(seed=trial["seed"], label=label)
    if checkpoint_path:
        overrides["checkpoint_path"] = checkpoint_path
    return [f"--config={trial['alg']}", f"--env-config={trial['env']}", "with",
            *(token(k, v) for k, v in overrides.items())]


def trial_config(trial, label="sweep:validate"):
    """The merged config of a trial, checked as src/main.py checks it; ConfigError names the trial and its entry."""
    from utils.config import build_config

    argv = trial_argv(trial, label)
    try:
        config = build_config(trial["alg"], trial["env"], parse_updates(argv[3:]))
        config.setdefault("name", trial["alg"])
        from run.preflight import check_config  # the registries and env arguments, as main.py checks them

        check_config(config, files=False)  # a file a trial reads may be an earlier one's output: checked at its start
    except ConfigError as e:
        grid = ", ".join(f"{k}={v!r}" for k, v in trial["grid"].items())
        raise ConfigError(f"{trial['where']}, trial {trial['id']}{f' (grid {grid})' if grid else ''}: {e}") from None
    return config


def validate(trials):
    """Build and check every trial's config before any starts (the first problem fails the sweep, naming the trial);
    adds to each trial what the driver and the trainable need to find its runs: the run name, env label, results
    folder and run length."""
    for t in trials:
        config = trial_config(t)
        offline = config.get("run") == "offline"
        t.update(name=config["name"], env_label=env_label(config), results=results_path(config),
                 t_max=int(config["offline_steps"] if offline else config["t_max"]), offline=offline,
                 run=config.get("run"))
    return trials
