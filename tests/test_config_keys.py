"""One source of defaults: every config key the code reads (`args.k`, `getattr(args, "k", ...)`) is defined in a YAML
under config/, and where the code still names a fallback for a key of default.yaml, it is default.yaml's value."""
import ast
import glob
import os

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# keys the code sets on args itself, after the config is merged (not user settings)
RUNTIME_KEYS = {
    "n_agents", "n_actions", "state_shape", "obs_shape", "episode_limit",  # from the env (run.setup.build)
    "device", "unique_token", "results_dir",  # run.setup.make_args / build
    "env_config",  # utils.config.build_config: which env config the run uses
    "tfcaf_sha256",  # qllm.features: the identity of the TFCAF the run trains with
}
# command-line tools whose `args` is an argparse namespace, and modules where `args` is something else
NOT_CONFIG = {"drop_episodes.py", "import_dataset.py", "plot.py", "reference_datasets.py", "llm/setup_local.py",
              "llm/local_server.py", "qllm/policy.py", "qllm/states.py", "qllm/validate.py", "qllm/explain.py",
              "qllm/tfcafs/manifest.py"}


def yaml_keys():
    keys = set()
    for path in glob.glob(os.path.join(ROOT, "config", "**", "*.yaml"), recursive=True):
        keys |= set(yaml.safe_load(open(path)) or {})
    return keys


def config_reads():
    """{key: [(file, line, fallback or None)]} for every read of a config key in src/."""
    reads = {}
    src = os.path.join(ROOT, "src")
    for path in glob.glob(os.path.join(src, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, src)
        if rel in NOT_CONFIG or rel.startswith("qllm/tfcafs/"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _is_args(node.value):
                reads.setdefault(node.attr, []).append((rel, node.lineno, None))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and _is_args(node.args[0]) and isinstance(node.args[1], ast.Constant)):
                fallback = node.args[2] if len(node.args) == 3 else None
                reads.setdefault(node.args[1].value, []).append((rel, node.lineno, fallback))
    return reads


def _is_args(node):
    return (isinstance(node, ast.Name) and node.id == "args") or (isinstance(node, ast.Attribute)
                                                                  and node.attr == "args")


def test_every_key_the_code_reads_is_defined_in_yaml():
    defined = yaml_keys() | RUNTIME_KEYS
    missing = {k: where[:3] for k, where in config_reads().items() if k not in defined}
    assert not missing, f"config keys read in code but defined in no YAML (add them to config/default.yaml): {missing}"


def test_code_fallbacks_agree_with_default_yaml():
    default = yaml.safe_load(open(os.path.join(ROOT, "config", "default.yaml")))
    disagree = []
    for key, where in config_reads().items():
        for rel, line, fallback in where:
            if fallback is None or key not in default:
                continue
            try:
                value = ast.literal_eval(fallback)
            except ValueError:
                continue
            if value != default[key]:
                disagree.append(f"{rel}:{line} {key}: code {value!r}, default.yaml {default[key]!r}")
    assert not disagree, disagree


def test_the_check_catches_a_code_only_key(tmp_path, monkeypatch):
    src = tmp_path / "src" / "learners"
    src.mkdir(parents=True)
    (src / "x.py").write_text("def f(args):\n    return getattr(args, 'made_up_key', 3)\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "default.yaml").write_text("lr: 0.1\n")
    reads = config_reads()
    assert "made_up_key" in reads and "made_up_key" not in yaml_keys()
