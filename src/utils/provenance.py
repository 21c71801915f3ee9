"""What makes a run reproducible from its folder, and re-running it.

Every run records in its Sacred `run.json` (`meta`): the configs it was started with (`alg_config`, `env_config`),
the `with` overrides as given (`with_updates`, the tokens; `config_updates`, parsed), the git commit and whether
the checkout had uncommitted changes (`git`), the versions of the packages it ran with (`packages`) and the machine
(`machine`: CPU model and cores, GPUs, Python). `config.json` beside it holds the full merged config, seed included.

    python src/main.py --rerun results/sacred/<alg>/<env>/<id> [with key=value ...]

re-runs such a run: the same configs and overrides, and every value its `config.json` recorded (so a YAML default
changed since does not change the rerun; such changes are listed). Overrides given after `with` apply on top.
"""
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata

from utils.cli import parse_updates
from utils.config import OPEN_KEYS, ConfigError, build_config, canonicalize, recursive_update, test_episodes
from utils.paths import REPO_ROOT, repo_relative

# distributions whose versions a run records when installed (the envs' packages are optional extras)
PACKAGES = ("torch", "numpy", "gymnasium", "sacred", "h5py", "PyYAML", "lbforaging", "mpe2", "pettingzoo",
            "jaxmarl", "jax", "gfootball", "smac", "smacv2", "openai")
RUN_JSON, CONFIG_JSON = "run.json", "config.json"


def git_info(root=REPO_ROOT):
    """{"commit", "dirty", "branch"} of the checkout at `root`; {"commit": None, "why": ...} outside one (a copy of
    the code without .git, or no git executable). `dirty`: tracked files differ from the commit."""
    def git(*args):
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip().splitlines()[0] if out.stderr.strip() else f"git {args[0]} failed")
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return {"commit": None, "why": f"not recorded: {e}"}
    return {"commit": commit, "dirty": bool(changed), "changed_files": len(changed), "branch": branch}


def package_versions(names=PACKAGES):
    """{distribution: version} of those installed (read from their metadata: nothing is imported)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """CPU model, cores (all and usable by this process), GPUs torch sees, Python and OS."""
    info = {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
            "os": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        info["cpu_cores_usable"] = len(os.sched_getaffinity(0))
    try:
        import torch

        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    except Exception as e:  # a broken CUDA install must not stop the run from starting
        info["gpus"] = f"unknown ({type(e).__name__})"
    return info


def provenance(alg, env, with_updates, config_updates, rerun_of=None):
    """The `meta` a run records in run.json (see the module docstring)."""
    meta = {"alg_config": alg, "env_config": env, "with_updates": list(with_updates),
            "config_updates": config_updates or {}, "git": git_info(), "packages": package_versions(),
            "machine": machine_info()}
    if rerun_of:
        meta["rerun_of"] = rerun_of
    return meta


# ----- re-running a run from its Sacred folder -----
def read_run_folder(folder):
    """(folder, its config.json, its run.json's meta) of a Sacred run folder."""
    folder = repo_relative(folder)
    config_file = os.path.join(folder, CONFIG_JSON)
    if not os.path.isfile(config_file):
        raise ConfigError(f"--rerun {folder}: not a run folder (no {CONFIG_JSON}); pass "
                          f"results/sacred/<alg>/<env>/<id>")
    try:
        with open(config_file) as f:
            config = json.load(f)
        meta = {}
        if os.path.isfile(os.path.join(folder, RUN_JSON)):
            with open(os.path.join(folder, RUN_JSON)) as f:
                meta = json.load(f).get("meta") or {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"--rerun {folder}: cannot read its {CONFIG_JSON} / {RUN_JSON}: {e}") from e
    info = {}
    try:
        with open(os.path.join(folder, "info.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        pass  # written at the run's first heartbeat: a run that ended at once has none
    if isinstance(info.get("resumed_from"), Mapping):
        meta = dict(meta, resumed_from=info["resumed_from"])
    return os.path.abspath(folder), config, meta


def flatten(updates, prefix=""):
    """{"a": {"b": 1}} -> ["a.b=1"] (JSON values, which Sacred's `with` parsing reads back)."""
    tokens = []
    for k, v in updates.items():
        if isinstance(v, Mapping) and v:
            tokens += flatten(v, f"{prefix}{k}.")
        else:
            tokens.append(f"{prefix}{k}={json.dumps(v)}")
    return tokens


def _known_part(recorded, current, where=""):
    """The part of `recorded` whose keys the current configs still define (inside OPEN_KEYS: all of it), and the
    dotted names of the keys left out."""
    kept, dropped = {}, []
    for k, v in recorded.items():
        if k not in current:
            dropped.append(f"{where}{k}")
        elif isinstance(v, Mapping) and isinstance(current[k], Mapping) and not (k in OPEN_KEYS and not where):
            kept[k], sub = _known_part(v, current[k], f"{where}{k}.")
            dropped += sub
        else:
            kept[k] = v
    return kept, dropped


def _differences(a, b, where=""):
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), Mapping) and isinstance(b.get(k), Mapping):
            out += _differences(a[k], b[k], f"{where}{k}.")
        elif a.get(k) != b.get(k):
            out.append((f"{where}{k}", a.get(k), b.get(k)))
    return out


def rerun_config(folder, new_updates=()):
    """What re-running the Sacred run in `folder` starts: (folder, alg, env, with-tokens, config, notes).

    The configs and `with` overrides it recorded (runs from before they were recorded: its `name` and env config and
    its recorded config_updates), then every value of its config.json on top (its seed included), then `new_updates`
    (tokens given after `with` on the rerun's command line). `notes` name what the current YAML would have set
    differently and the recorded keys that no config defines any more (left out)."""
    folder, recorded, meta = read_run_folder(folder)
    alg = meta.get("alg_config") or recorded.get("name")
    env = meta.get("env_config") or recorded.get("env_config")
    if not alg or not env:
        raise ConfigError(f"--rerun {folder}: its run.json does not say which --config / --env-config it ran with")
    tokens = list(meta.get("with_updates") or flatten(meta.get("config_updates") or {}))
    new = canonicalize(parse_updates(list(new_updates)))
    if "label" not in new:  # a sweep's trial label is the trial's identity: a rerun is not that trial
        tokens = [t for t in tokens if not t.startswith("label=")]
        recorded = {k: v for k, v in recorded.items() if k != "label"}
    # the YAML with every override: the new ones are checked here like any `with` override
    yaml_config = build_config(alg, env, parse_updates(tokens + list(new_updates)))
    yaml_config.setdefault("name", alg)  # as main() sets it
    kept, dropped = _known_part(_without(recorded, new), yaml_config)
    kept.pop("env_config", None)
    config = recursive_update(yaml_config, kept)
    # config.json records the test episodes that ran (whole rounds of batch_size_run: main.record_test_episodes)
    ran_alike = {"test_nepisode": test_episodes(yaml_config)}
    notes = [f"{k}: the run had {ran!r}, the current configs give {now!r} (the run's value is used)"
             for k, ran, now in _differences(config, yaml_config) if k != "seed" and ran_alike.get(k, now) != ran]
    notes += [f"'{k}' is no longer a config key: left out" for k in dropped]
    checkpoint = (meta.get("resumed_from") or {}).get("checkpoint")
    if checkpoint and "checkpoint_path" not in new and config.get("checkpoint_path"):
        # the run resumed from its folder's latest checkpoint then; the folder may hold later ones now
        config["checkpoint_path"], config["load_step"] = checkpoint, 0
        notes.append(f"it resumed from {checkpoint}: so does the rerun (in a new model folder if that is no longer "
                     f"the latest checkpoint there)")
    return folder, alg, env, tokens + list(new_updates), config, notes


def _without(recorded, updates):
    """`recorded` less the (nested) keys that `updates` sets."""
    out = {}
    for k, v in recorded.items():
        if k in updates and not (isinstance(v, Mapping) and isinstance(updates[k], Mapping)):
            continue
        out[k] = _without(v, updates[k]) if k in updates else v
    return out


