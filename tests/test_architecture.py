"""The layers contract (pyproject.toml [tool.importlinter]) holds, and would catch an upward import."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint_imports(src_dir, cwd=ROOT):
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = dict(os.environ, PYTHONPATH=src_dir)
    return subprocess.run([exe, "--config", os.path.join(ROOT, "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_imports_only_go_down():
    res = lint_imports(os.path.join(ROOT, "src"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "src"), src, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    with open(src / "utils" / "files.py", "a") as f:
        f.write("\nfrom run.setup import build  # noqa: E402,F401 (deliberately upward)\n")
    res = lint_imports(str(src), cwd=str(tmp_path))
    assert res.returncode != 0 and "utils is not allowed to import run" in res.stdout, res.stdout[-3000:]


def test_every_package_in_src_is_in_the_contract():
    """A new top-level package (labeling/, augmenters/, ...) is invisible to the contract until it is listed in
    root_packages and placed in a layer; this fails until it is."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        linter = tomllib.load(f)["tool"]["importlinter"]
    packages = {name for name in os.listdir(os.path.join(ROOT, "src"))
                if os.path.isfile(os.path.join(ROOT, "src", name, "__init__.py"))}
    layers = linter["contracts"][0]["layers"]
    layered = {part.strip(" ()") for layer in layers for part in layer.replace(":", "|").split("|")}
    assert packages <= set(linter["root_packages"]), f"add to root_packages: {packages - set(linter['root_packages'])}"
    assert packages <= layered, f"place in a layer: {packages - layered}"
