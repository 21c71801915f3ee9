"""Validate a TFCAF file in the sandbox on states of an env config (qllm.validate); with --write-meta, sign a
validation record for it with this installation's key (qllm.records) in `<name>.meta.json` beside it (one record per
file: validating another file in the same folder leaves this one's alone), so that `mixer: qllm` trains with it
without validating it again.

    python scripts/qllm_validate.py path/to/my_tfcaf.py --env-config lbf [--no-igm-gate] [--write-meta] [--states N]

Prints the report as JSON, then a summary for people. Exit status 0 when the file passes, 1 when it fails (what
failed and how to fix it go to stderr), 2 when the file cannot be read. The old path
`python src/qllm/validate.py ...` runs this, for one release.
"""
import argparse
import json
import os
import sys

import _bootstrap  # noqa: F401

from qllm import records
from qllm.states import sample_states_and_info
from qllm.validate import ValidationContext, validate_source
from utils.config import build_config


def context_for_env_config(env_config, igm_gate=True, n=512, seed=0, overrides=None):
    """ValidationContext with states sampled from an env config in config/envs (its env and env_args)."""
    config = build_config("qmix", env_config, overrides or {})
    states, info = sample_states_and_info(config["env"], config["env_args"], n=n, seed=seed)
    return ValidationContext(n_agents=info["n_agents"], state_size=info["state_size"], states=states,
                             igm_gate=igm_gate)


def main(argv=None):
    p = argparse.ArgumentParser(description="Validate a TFCAF file in the sandbox on states of an env config.")
    p.add_argument("path")
    p.add_argument("--env-config", required=True, help="name of a config in config/envs")
    p.add_argument("--no-igm-gate", action="store_true", help="validate for igm_gate false")
    p.add_argument("--write-meta", action="store_true",
                   help="sign a validation record for the file in <name>.meta.json beside it")
    p.add_argument("--states", type=int, default=512)
    a = p.parse_args(argv)
    name = os.path.basename(a.path)
    try:
        raw, digest = records.read_tfcaf(a.path)
    except OSError as e:
        print(f"cannot read {a.path}: {e.strerror or e}", file=sys.stderr)
        return 2
    ctx = context_for_env_config(a.env_config, igm_gate=not a.no_igm_gate, n=a.states)
    report = validate_source(raw.decode("utf-8", errors="replace"), ctx)
    print(json.dumps(report.to_dict(), indent=2))
    gate = f"igm_gate {'on' if ctx.igm_gate else 'off'}"
    if not report.ok:
        print(f"{report.summary(name)}\n(env config {a.env_config}, {gate}; no validation record was written)",
              file=sys.stderr)
        return 1
    print(f"{report.summary(name)} (env config {a.env_config}, {gate}, {len(ctx.states)} states)")
    train = (f"python src/main.py --config=qllm --env-config={a.env_config} with tfcaf_path={a.path}"
             + ("" if ctx.igm_gate else " igm_gate=False"))
    if a.write_meta:
        try:
            meta = records.read_meta(a.path, strict=True)
        except (OSError, ValueError) as e:
            print(f"cannot read the existing record {records.record_path(a.path)} ({e}); move it away and run this "
                  f"again", file=sys.stderr)
            return 2
        meta.setdefault("source", "validated with scripts/qllm_validate.py")
        meta.update(file=name, igm_gate=ctx.igm_gate, env_config=a.env_config, validation=report.to_dict())
        records.record_validation(meta, sha256=digest, env_config=a.env_config, igm_gate=ctx.igm_gate,
                                  n_agents=ctx.n_agents, state_size=ctx.state_size, validation=report.to_dict())
        path = records.write_meta(a.path, meta)
        print(f"wrote {path}: the validation record of {name}, signed with {records.key_path()}\n"
              f"train with it: {train}")
    else:
        print(f"no record written: add --write-meta to sign one, so that training uses {name} without validating "
              f"it again ({train})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
