"""Validate a TFCAF file in the sandbox on states of an env config (qllm.validate); with --write-meta, sign a
validation record for it with this installation's key (qllm.records) in meta.json beside it, so that
`mixer: qllm` trains with it without validating it again.

    python scripts/qllm_validate.py path/to/tfcaf.py --env-config lbf [--no-igm-gate] [--write-meta] [--states N]

Exit status 0 when the file passes (the report is printed as JSON), 1 when it fails (the coder feedback goes to
stderr). The old path `python src/qllm/validate.py ...` runs this, for one release.
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
    p.add_argument("--write-meta", action="store_true", help="write meta.json (sha256, report) next to the file")
    p.add_argument("--states", type=int, default=512)
    a = p.parse_args(argv)
    raw, digest = records.read_tfcaf(a.path)
    ctx = context_for_env_config(a.env_config, igm_gate=not a.no_igm_gate, n=a.states)
    report = validate_source(raw.decode("utf-8", errors="replace"), ctx)
    print(json.dumps(report.to_dict(), indent=2))
    if not report.ok:
        print(report.feedback(), file=sys.stderr)
        return 1
    if a.write_meta:
        meta = records.read_meta(a.path, strict=True)
        meta.setdefault("source", "validated with scripts/qllm_validate.py")
        meta.update(file=os.path.basename(a.path), igm_gate=ctx.igm_gate, env_config=a.env_config,
                    validation=report.to_dict())
        records.record_validation(meta, sha256=digest, env_config=a.env_config, igm_gate=ctx.igm_gate,
                                  n_agents=ctx.n_agents, state_size=ctx.state_size, validation=report.to_dict())
        path = records.write_meta(a.path, meta)
        print(f"wrote {path} (validation record signed with {records.key_path()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
