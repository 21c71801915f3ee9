"""One source of defaults: every config key the code reads (`args.k`, `getattr(args, "k", ...)`) is defined in a YAML
under config/, and the code names no fallback of its own (`getattr(args, "k", default)`, `vars(args).get("k", d)`):
the default lives in YAML once (config/default.yaml, or the alg/run config that is its only user) and the code reads
`args.k`. FALLBACK_ALLOWED lists the few reads where a fallback is the point."""
import ast
import glob
import os

import yaml

from helpers import RUNTIME_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (file under src/, key): reads that may name a fallback, each with why
FALLBACK_ALLOWED = {
    # a runtime key (set by qllm.features when a run starts its TFCAF), absent when the mixer is built outside a run
    ("modules/mixers/qllm.py", "tfcaf_sha256"),
}
# command-line tools whose `args` is an argparse namespace, and modules where `args` is something else
NOT_CONFIG = {"drop_episodes.py", "import_dataset.py", "plot.py", "reference_datasets.py", "llm/setup_local.py",
              "llm/local_server.py", "qllm/policy.py", "qllm/states.py", "qllm/validate.py", "qllm/explain.py",
              "qllm/tfcafs/manifest.py", "results.py", "sweep.py"}


def yaml_keys():
    keys = set()
    for path in glob.glob(os.path.join(ROOT, "config", "**", "*.yaml"), recursive=True):
        keys |= set(yaml.safe_load(open(path)) or {})
    return keys


def config_modules():
    """(path relative to src/, parsed module) for every module of src/ whose `args` is a run's config."""
    src = os.path.join(ROOT, "src")
    for path in sorted(glob.glob(os.path.join(src, "**", "*.py"), recursive=True)):
        rel = os.path.relpath(path, src)
        if rel in NOT_CONFIG or rel.startswith("qllm/tfcafs/"):
            continue
        yield rel, ast.parse(open(path).read())


def config_reads():
    """{key: [(file, line, fallback or None)]} for every read of a config key in src/."""
    reads = {}
    for rel, tree in config_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _is_args(node.value):
                reads.setdefault(node.attr, []).append((rel, node.lineno, None))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and _is_args(node.args[0]) and isinstance(node.args[1], ast.Constant)):
                fallback = node.args[2] if len(node.args) == 3 else None
                reads.setdefault(node.args[1].value, []).append((rel, node.lineno, fallback))
    return reads


def code_fallbacks():
    """[(file, line, key)] for every config read in src/ that names a default of its own: `getattr(args, k, default)`
    or `vars(args).get(k, default)` (k a string, or `?` when it is computed)."""
    found = []
    for rel, tree in config_modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            f = node.func
            getattr_default = isinstance(f, ast.Name) and f.id == "getattr" and len(node.args) == 3
            vars_get = (isinstance(f, ast.Attribute) and f.attr == "get" and isinstance(f.value, ast.Call)
                        and isinstance(f.value.func, ast.Name) and f.value.func.id == "vars" and f.value.args)
            target = node.args[0] if getattr_default else f.value.args[0] if vars_get else None
            if target is None or not _is_args(target):
                continue
            key_node = node.args[1] if getattr_default else node.args[0]
            key = key_node.value if isinstance(key_node, ast.Constant) else "?"
            found.append((rel, node.lineno, key))
    return found


def _is_args(node):
    return (isinstance(node, ast.Name) and node.id == "args") or (isinstance(node, ast.Attribute)
                                                                  and node.attr == "args")


def test_every_key_the_code_reads_is_defined_in_yaml():
    defined = yaml_keys() | RUNTIME_KEYS
    missing = {k: where[:3] for k, where in config_reads().items() if k not in defined}
    assert not missing, f"config keys read in code but defined in no YAML (add them to config/default.yaml): {missing}"


def test_code_names_no_fallback_of_its_own():
    found = [f"{rel}:{line} {key}" for rel, line, key in code_fallbacks() if (rel, key) not in FALLBACK_ALLOWED]
    assert not found, ("config reads with a code-side default (put the default in config/default.yaml, or the alg "
                       f"config that is its only user, and read args.<key>): {found}")


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
    assert code_fallbacks() == [("learners/x.py", 2, "made_up_key")]


def test_the_check_catches_a_code_side_default_of_a_yaml_key(tmp_path, monkeypatch):
    src = tmp_path / "src" / "modules"
    src.mkdir(parents=True)
    (src / "x.py").write_text("class M:\n    def __init__(self, args, key):\n        self.args = args\n"
                              "        a = getattr(self.args, 'lr', 0.1)\n        b = vars(args).get('gamma', 0.9)\n"
                              "        c = getattr(args, key, None)\n        d = getattr(args, 'lr')\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    assert code_fallbacks() == [("modules/x.py", 4, "lr"), ("modules/x.py", 5, "gamma"), ("modules/x.py", 6, "?")]
