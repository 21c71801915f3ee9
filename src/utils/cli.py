"""The pymarl command line: `--config=ALG --env-config=ENV [sacred flags] with key=value ...` (src/main.py and the
scripts that take the same arguments): splitting it, `--help`, and errors for what Sacred would reject silently."""
import difflib
import os
import shutil
import textwrap

from sacred.arg_parser import get_config_updates

from utils.config import ConfigError, available, canonical_key, yaml_scalar
from utils.paths import REPO_ROOT

HELP_FLAGS = ("-h", "--help")
USAGE = "python src/main.py --config=ALG --env-config=ENV [with key=value ...]"
EXAMPLE = "python src/main.py --config=qmix --env-config=lbf with t_max=200000 env_args.time_limit=50"


def split_argv(argv):
    """Pull --config/--env-config and the `with` updates out of argv; the rest goes to Sacred."""
    alg = env = None
    rest, updates = [], []
    it = iter(range(len(argv)))
    in_with = False
    for i in it:
        a = argv[i]
        for flag in ("--config", "--env-config"):
            if a == flag and i + 1 < len(argv):
                a = f"{flag}={argv[i + 1]}"
                next(it)
        if a.startswith("--config="):
            alg = a.split("=", 1)[1]
        elif a.startswith("--env-config="):
            env = a.split("=", 1)[1]
        elif a == "with":
            in_with = True
        elif in_with and not a.startswith("-"):
            updates.append(a)
        else:
            in_with = False
            rest.append(a)
    return alg, env, updates, rest


def help_text(width=None):
    """Usage, the algorithm, run-mode and env configs there are, and where the README is."""
    width = width or min(100, shutil.get_terminal_size((100, 24)).columns)

    def names(title, subdir):
        listed = ", ".join(available(subdir)) or "(none)"
        return textwrap.fill(listed, width, initial_indent="    ", subsequent_indent="    ").join([f"{title}\n", ""])

    readme = os.path.join(REPO_ROOT, "README.md")
    return "\n".join([
        f"usage: {USAGE}",
        "",
        "  --config=ALG       an algorithm (config/algs/ALG.yaml) or a run mode (config/runs/ALG.yaml)",
        "  --env-config=ENV   an environment (config/envs/ENV.yaml)",
        "  with key=value     override any config key; nested keys with dots (env_args.time_limit=50);",
        "                     config/default.yaml lists every key with a comment",
        "  -h, --help         this help",
        "",
        f"example: {EXAMPLE}",
        "",
        names("algorithm configs (--config, config/algs/):", "algs"),
        names("run-mode configs (--config, config/runs/):", "runs"),
        names("env configs (--env-config, config/envs/):", "envs"),
        "",
        "Sacred's own flags and commands go before `with` (e.g. -l DEBUG, -u, print_config).",
        f"Documentation: {readme}",
    ])


def _sacred_cli():
    """(flags that take a value, all flags, commands) of Sacred's command line, as main.py's experiment has them."""
    from sacred import Experiment

    ex = Experiment("pymarl", save_git_info=False, interactive=True)
    options = ex.all_cli_options
    valued = {f for o in options if getattr(o, "arg", None) for f in o.get_flags()}
    flags = {f for o in options for f in o.get_flags()}
    return valued, flags, {*dict(ex.gather_commands()), "help"}


def check_sacred_args(rest):
    """Raise ConfigError for what Sacred would reject with no message: a misspelt `with`, an update before `with`,
    a flag without its value, an unknown flag or command (`rest`: what split_argv leaves for Sacred)."""
    valued, flags, commands = _sacred_cli()
    positional = 0
    it = iter(enumerate(rest))
    for i, tok in it:
        if tok in ("--config", "--env-config"):
            raise ConfigError(f"{tok} needs a value: {tok}=NAME")
        if tok.startswith("-"):
            flag = tok.split("=", 1)[0]
            if flag not in flags:
                close = difflib.get_close_matches(flag, sorted(flags), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(f"unknown option '{tok}'{hint} usage: {USAGE}")
            if flag in valued and "=" not in tok:
                if i + 1 >= len(rest):
                    raise ConfigError(f"option {tok} needs a value")
                next(it)
            continue
        if "=" in tok:
            raise ConfigError(f"'{tok}' is an update but no `with` comes before it: write "
                              f"`... with {' '.join(t for t in rest[i:] if '=' in t)}` (usage: {USAGE})")
        if difflib.get_close_matches(tok.lower(), ["with"], n=1, cutoff=0.5):
            raise ConfigError(f"unexpected '{tok}': did you mean `with`? (usage: {USAGE})")
        positional += 1
        if tok not in commands or positional > 1:
            raise ConfigError(f"unexpected argument '{tok}' (usage: {USAGE}; updates follow `with`; "
                              f"Sacred commands: {', '.join(sorted(commands))})")


def parse_updates(tokens):
    """`k=v` tokens -> nested dict, with Sacred's own value parsing; alias keys renamed. A key given in both spellings
    with different values (rnn_hidden_dim=32 hidden_dim=16) is a ConfigError: neither may win silently."""
    renamed, given = [], {}
    for tok in tokens:
        if "=" in tok:
            key, val = tok.split("=", 1)
            head, *tail = key.split(".")
            if not tail:  # aliases are top-level keys
                given.setdefault(canonical_key(head), []).append((head, val))
            tok = ".".join([canonical_key(head), *tail]) + "=" + val
        renamed.append(tok)
    for key, spellings in given.items():
        if len({head for head, _ in spellings}) < 2:
            continue
        values = {repr(get_config_updates([f"x={val}"])[0]["x"]) for _, val in spellings}
        if len(values) > 1:
            raise ConfigError(f"{' and '.join(f'{head}={val}' for head, val in spellings)} set the same key '{key}' "
                              f"(pymarl and epymarl spellings) to different values; give it once")
    updates, named = get_config_updates(renamed)
    files = [n for n in named if n.lower().endswith(CONFIG_FILE_ENDINGS)]
    if files:  # Sacred's `with file.yaml` form: its keys would skip every check of the config layer
        raise ConfigError(f"'{files[0]}': config files given to `with` are not supported; put the settings in "
                          f"config/algs/<name>.yaml and use --config=<name> (`inherit: <alg>` starts it from an "
                          f"existing one), or pass them as `with key=value`")
    if named:
        raise ConfigError(f"'{' '.join(named)}' is not a key=value update; write `with key=value`")
    return {k: _yaml_nested(v) for k, v in updates.items()}


# Sacred reads `with <file>` with these endings as a config file
CONFIG_FILE_ENDINGS = (".yaml", ".yml", ".json", ".pickle", ".jsonpickle")


def _yaml_nested(value, nested=False):
    """Values of nested keys (env_args.normalize_reward=false) read as YAML reads true/false/null, as the top-level
    keys' are by their type (utils.config.check_types); a nested key often has no default to take a type from."""
    if isinstance(value, dict):
        return {k: _yaml_nested(v, True) for k, v in value.items()}
    return yaml_scalar(value) if nested else value


def repeated_keys(tokens):
    """Warnings for keys given twice in one command line with different values (`with t_max=800 t_max=500`, or
    `env_args.time_limit=10 env_args={'time_limit': 20}`): the last wins, as in Sacred and epymarl (scripts append
    overrides), but never silently. A key given whole (`env_args={...}`, or a value) after keys under it replaces
    them all, as Sacred does: the ones it does not set again are named as dropped. Spellings of one key
    (rnn_hidden_dim, hidden_dim) are refused by parse_updates."""
    seen, notes = {}, []  # dotted key -> (repr of the parsed value, the value as given)
    for tok in tokens:
        if "=" not in tok:
            continue
        key, val = tok.split("=", 1)
        leaves = _leaves(key, val)
        now = {leaf for leaf, _, _ in leaves}
        for old in [k for k in seen if k.startswith(key + ".") and k not in now]:
            notes.append(f"'{old}={seen[old][1]}' is dropped: the later {key}={val} replaces what was given for "
                         f"'{key}' (give {old} after it, or inside it)")
            del seen[old]
        for leaf, parsed, text in leaves:
            if leaf in seen and seen[leaf][0] != parsed:
                notes.append(f"'{leaf}' is given twice ({leaf}={seen[leaf][1]}, then {leaf}={text}): the last, "
                             f"{text}, is used")
            seen[leaf] = (parsed, text)
    return notes


def _leaves(key, val):
    """(dotted key, repr of its parsed value, the value as given) for each key `key=val` sets: one, or one per key
    of a dict value, at any depth."""
    try:
        value = get_config_updates([f"x={val}"])[0]["x"]
    except Exception:  # Sacred's parser refuses it: parse_updates reports it
        return [(key, val, val)]
    return _flat(key, value, val)


def _flat(key, value, text):
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _flat(f"{key}.{k}", v, repr(v))]
    return [(key, repr(value), text)]
