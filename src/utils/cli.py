"""The pymarl command line: `--config=ALG --env-config=ENV [sacred flags] with key=value ...` (src/main.py and the
scripts that take the same arguments)."""
from sacred.arg_parser import get_config_updates

from utils.config import ConfigError, canonical_key


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


def parse_updates(tokens):
    """`k=v` tokens -> nested dict, with Sacred's own value parsing; alias keys renamed."""
    renamed = []
    for tok in tokens:
        if "=" in tok:
            key, val = tok.split("=", 1)
            head, *tail = key.split(".")
            tok = ".".join([canonical_key(head), *tail]) + "=" + val
        renamed.append(tok)
    updates, named = get_config_updates(renamed)
    if named:
        raise ConfigError(f"'{' '.join(named)}' is not a key=value update; write `with key=value`")
    return updates
