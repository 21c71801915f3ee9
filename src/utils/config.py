"""Loading and merging the YAML configs; pymarl/epymarl key aliases; unknown-key and range errors.

Merge order (pymarl's): default.yaml <- envs/<env>.yaml <- algs/<alg>.yaml <- `with` overrides.
`--config=<name>` names an algorithm (config/algs/) or a run-mode config (config/runs/: collect, qllm_generate, ...);
a name is looked up in both folders and must be in one of them only.
"""
import difflib
import os
from collections.abc import Mapping
from copy import deepcopy

import yaml

from utils.paths import CONFIG_DIR

# Other codebases' spellings of our keys (pymarl/pymarl2 -> epymarl). Both are accepted
# everywhere (YAML files and `with`); the config that is stored uses the right-hand name.
KEY_ALIASES = {
    "rnn_hidden_dim": "hidden_dim",
    "target_update_interval": "target_update_interval_or_tau",
}

# Keys under which any sub-key is accepted: their contents are checked by the env/module that uses them.
OPEN_KEYS = ("env_args", "collect_datasets", "quality_fractions")


# Keys with a fixed set of values (learners read on_nonfinite from here too).
CHOICES = {"on_nonfinite": ("stop", "skip_batch")}

# key -> (integer only, test, allowed range in words, null allowed). Checked on the merged config, before anything runs.
RANGES = {
    "lr": (False, lambda v: v > 0, "> 0", False),
    "critic_lr": (False, lambda v: v > 0, "> 0 (or null = lr)", True),
    "gamma": (False, lambda v: 0 < v <= 1, "in (0, 1]", False),
    "batch_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "batch_size_run": (True, lambda v: v >= 1, "an integer >= 1", False),
    "buffer_size": (True, lambda v: v >= 1, "an integer >= 1", False),
    "hidden_dim": (True, lambda v: v >= 1, "an integer >= 1", False),
    "critic_hidden_dim": (True, lambda v: v >= 1, "an integer >= 1 (or null = hidden_dim)", True),
    "t_max": (False, lambda v: v >= 0, ">= 0", False),
    "tfcaf_timeout_s": (False, lambda v: v > 0, "> 0", False),
    "tfcaf_memory_mb": (True, lambda v: v >= 64, "an integer >= 64", False),
}


class ConfigError(ValueError):
    """A config problem the user can fix; the message says what and how."""


def canonical_key(key):
    return KEY_ALIASES.get(key, key)


def canonicalize(d):
    """Rename alias keys (top level only; aliases are top-level keys)."""
    out = {}
    for k, v in d.items():
        ck = canonical_key(k)
        if ck in out:
            raise ConfigError(f"'{ck}' is set twice (once through its alias); keep one spelling")
        out[ck] = v
    return out


def recursive_update(base, update):
    """Return a deep copy of `base` updated with `update`; nested mappings merge key by key."""
    out = deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = recursive_update(out[k], v)
        else:
            out[k] = deepcopy(v)
    return out


# --config=<name> is looked up in these folders (algorithms, run-mode configs)
RUN_CONFIG_DIRS = ("algs", "runs")


def available(subdir):
    folder = os.path.join(CONFIG_DIR, subdir)
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def _unknown_name(name, subdirs):
    valid = sorted({n for d in subdirs for n in available(d)})
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    where = " or ".join(f"config/{d}/" for d in subdirs)
    return ConfigError(f"no config '{name}' in {where}.{hint} Valid names: {', '.join(valid)}")


def read_yaml(path):
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return canonicalize(data)


def load_yaml(subdir, name):
    """Load config/<subdir>/<name>.yaml; an unknown name lists the valid ones."""
    path = os.path.join(CONFIG_DIR, subdir, f"{name}.yaml") if subdir else os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise _unknown_name(name, (subdir,))
    return read_yaml(path)


def run_config_path(name):
    """The file of `--config=<name>`: config/algs/<name>.yaml or config/runs/<name>.yaml (not both)."""
    found = [os.path.join(CONFIG_DIR, d, f"{name}.yaml") for d in RUN_CONFIG_DIRS]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        raise _unknown_name(name, RUN_CONFIG_DIRS)
    if len(found) > 1:
        files = " and ".join(os.path.relpath(p, os.path.dirname(CONFIG_DIR)) for p in found)
        raise ConfigError(f"--config={name} is ambiguous: both {files} exist; rename or remove one")
    return found[0]


def load_alg(name, _seen=()):
    """The `--config=<name>` settings (config/algs/ or config/runs/); `inherit: <other name>` starts from that
    config's settings, in either folder (a variant lists only what it changes, e.g. bc50 = bc with
    offline_top_fraction 0.5)."""
    if name in _seen:
        raise ConfigError(f"config inherit cycle {' -> '.join((*_seen, name))}")
    data = read_yaml(run_config_path(name))
    base = data.pop("inherit", None)
    return recursive_update(load_alg(base, (*_seen, name)), data) if base else data


def suggest(key, valid):
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    return f" Closest valid keys: {', '.join(close)}." if close else ""


def check_known_keys(update, known, where=""):
    """Raise ConfigError for any key of `update` (nested, dotted) that `known` lacks."""
    for k, v in update.items():
        path = f"{where}{k}"
        if k not in known:
            raise ConfigError(
                f"unknown config key '{path}'.{suggest(k, list(known))} "
                f"Every key needs a default in config/default.yaml, the env config or the alg config; "
                f"add it there if it is new."
            )
        if k in OPEN_KEYS and not where:
            continue
        if isinstance(v, Mapping) and isinstance(known.get(k), Mapping):
            check_known_keys(v, known[k], where=f"{path}.")


def key_name(key):
    """The key as the user may have spelled it: 'hidden_dim (pymarl: rnn_hidden_dim)'."""
    aliases = [a for a, k in KEY_ALIASES.items() if k == key]
    return f"'{key}'" + (f" (pymarl: {', '.join(aliases)})" if aliases else "")


def check_values(config):
    """Raise ConfigError naming the key, the value and the allowed values for the first value out of range."""
    for key, choices in CHOICES.items():
        if key in config and config[key] not in choices:
            raise ConfigError(f"config key {key_name(key)} must be one of {', '.join(choices)}; got {config[key]!r}")
    for key, (integer, test, allowed, nullable) in RANGES.items():
        if key not in config or (nullable and config[key] is None):
            continue
        value = config[key]
        number = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or not test(value):
            raise ConfigError(f"config key {key_name(key)} must be {allowed}; got {value!r}")


def build_config(alg, env, overrides=None):
    """default <- env <- alg (config/algs/ or config/runs/) <- overrides, with aliases resolved and unknown keys
    rejected."""
    config = load_yaml("", "default")
    # A new key in an env or alg YAML is fine (that is how options are added); unknown
    # keys are an error only in overrides, where they are almost always typos.
    for part in (load_yaml("envs", env), load_alg(alg)):
        config = recursive_update(config, part)
    if overrides:
        overrides = canonicalize(overrides)
        check_known_keys(overrides, config)
        config = recursive_update(config, overrides)
    check_values(config)
    config["env_config"] = env  # internal (not settable): which env config this run uses, e.g. for mixer qllm
    return config
