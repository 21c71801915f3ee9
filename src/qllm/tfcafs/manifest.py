"""Recompute src/qllm/tfcafs/MANIFEST.json from the reference files (run after editing one):

    cd src && python -m qllm.tfcafs.manifest          # rewrite MANIFEST.json
    cd src && python -m qllm.tfcafs.manifest --check  # exit 1 if it is stale

Checks that every env config in config/envs except gymma has a reference file (configs of one task family
with the same state layout share one, see SHARED) and no file lacks a config, that each file starts with the
hand-written header naming it, declares `# igm_gate: true` or `false` on its second line and defines
`tfcaf(state, n_agents)` at the top level (checked on the syntax tree; nothing is executed). state_size and
n_agents come from the env built with the config's env_args; where that env cannot be built here (StarCraft II,
a missing optional extra) they are taken from KNOWN_SIZES or the previous manifest.
"""
import argparse
import ast
import os
import sys

from qllm import records
from utils.config import available, load_yaml

HEADER = "# Hand-written reference TFCAF (not LLM output) for "
EXCLUDED_CONFIGS = ("gymma",)  # any gymnasium env: no fixed state layout to write a reference for
NOT_REFERENCES = ("__init__.py", "manifest.py")
# Envs that cannot be built without StarCraft II: (state size, n_agents) from SMAC's state layout as documented
# in envs/smac.py (3m: 3 x 4 + 3 x 3 + 3 x 9 = 48; 10gen_protoss 5 vs 5: 5 x 8 + 5 x 7 + 5 x 11 = 130);
# tests/qllm/test_reference_tfcafs.py checks them against envs.smac's schema arithmetic.
KNOWN_SIZES = {"sc2": (48, 3), "sc2v2": (130, 5)}
# configs whose state layout is their family's, read with sizes derived from the state: one file serves them all
SHARED = {
    "lbf_8x8_2p_2f_coop": "lbf", "lbf_2s_8x8_2p_2f_coop": "lbf", "lbf_2s_10x10_3p_3f": "lbf",
    "lbf_2s_15x15_4p_3f": "lbf", "mpe_spread_6": "mpe_spread", "mpe_world": "mpe_tag", "matrix_game": "penalty",
    "gfootball_3v1": "gfootball", "gfootball_counterattack_easy": "gfootball", "gfootball_pass_shoot": "gfootball",
    "smax_5m_vs_6m": "smax",
}


def file_for(config):
    """Module name (file stem) of the reference TFCAF that serves an env config."""
    return SHARED.get(config, config)


class ManifestError(ValueError):
    pass


def reference_configs():
    return [name for name in available("envs") if name not in EXCLUDED_CONFIGS]


def read_header(name, source):
    """igm_gate declared by a reference file's header; ManifestError if the header is wrong."""
    lines = source.splitlines()
    if not lines or not lines[0].startswith(f"{HEADER}{name}: ") or len(lines[0]) <= len(HEADER) + len(name) + 2:
        raise ManifestError(f"{name}.py: the first line must be '{HEADER}{name}: <one-line idea>'")
    gate = lines[1].strip() if len(lines) > 1 else ""
    if gate not in ("# igm_gate: true", "# igm_gate: false"):
        raise ManifestError(f"{name}.py: the second line must be '# igm_gate: true' or '# igm_gate: false'")
    return gate.endswith("true")


def defines_tfcaf(source):
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "tfcaf":
            return [a.arg for a in node.args.args] == ["state", "n_agents"]
    return False


def env_sizes(name):
    """(state_size, n_agents) of the env config, or None when the env cannot be built here."""
    from envs import make_env

    cfg = load_yaml("envs", name)
    try:
        env = make_env(cfg["env"], **cfg["env_args"], seed=0)
    except ImportError:  # StarCraft II (SC2Unavailable is an ImportError) or a missing optional extra
        return None
    try:
        return int(env.get_state_size()), int(env.n_agents)
    finally:
        env.close()


def build_manifest(previous=None):
    previous = previous or {}
    configs = reference_configs()
    files = sorted(f for f in os.listdir(records.TFCAF_DIR) if f.endswith(".py") and f not in NOT_REFERENCES)
    stray = [f for f in files if f[:-3] not in {file_for(c) for c in configs}]
    if stray:
        raise ManifestError(f"reference files without an env config in config/envs: {', '.join(stray)}")
    manifest = {}
    for name in configs:
        stem = file_for(name)
        path = os.path.join(records.TFCAF_DIR, f"{stem}.py")
        if not os.path.isfile(path):
            raise ManifestError(f"env config '{name}' has no reference TFCAF (expected {path})")
        data, sha256 = records.read_tfcaf(path)
        source = data.decode("utf-8")
        igm_gate = read_header(stem, source)
        if not defines_tfcaf(source):
            raise ManifestError(f"{stem}.py does not define a top-level tfcaf(state, n_agents)")
        sizes = env_sizes(name) or KNOWN_SIZES.get(name)
        if sizes is None and name in previous:
            sizes = previous[name]["state_size"], previous[name]["n_agents"]
        if sizes is None:
            raise ManifestError(f"cannot build env config '{name}' here to read its state size; install its extra")
        manifest[name] = records.manifest_entry(f"{stem}.py", sha256, igm_gate, *sizes)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that MANIFEST.json is up to date")
    opts = parser.parse_args(argv)
    previous = records.read_manifest() if os.path.isfile(records.manifest_path()) else {}
    try:
        manifest = build_manifest(previous)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if opts.check:
        if previous != manifest:
            changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
            print(f"MANIFEST.json is stale for: {', '.join(changed)}; run python -m qllm.tfcafs.manifest",
                  file=sys.stderr)
            return 1
        print(f"MANIFEST.json is up to date ({len(manifest)} reference TFCAFs)")
        return 0
    records.write_manifest(manifest)
    for name, entry in manifest.items():
        print(f"{name:32s} S={entry['state_size']:<5d} n={entry['n_agents']:<3d} igm_gate={entry['igm_gate']!s:5s} "
              f"{entry['sha256'][:12]}")
    print(f"wrote {records.manifest_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
