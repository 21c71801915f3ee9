"""The README's commands run as written, and every file it (or a guide in docs/) names exists.

Convention (also stated in the README's "Your first week"): a fenced ```bash block directly preceded by the
line `<!-- runnable -->` (blank lines and other `<!-- ... -->` comment lines in between are allowed) is run by
this test. Every runnable block of README.md is joined, in order, into one bash script (`set -euo pipefail`),
so a block may use the files written by the blocks above it, as a reader working through the README would.
The script runs in a scratch copy of the repository (src/, config/, scripts/ copied, .venv linked), so its
results/ and any file it writes stay out of the checkout.

Everything is run as written except the scale: each `src/main.py` command gets small-scale overrides appended
to its `with` part (replacing the same keys where the command sets them):

    --config=collect              none: its 32 scoring episodes per policy (collect_eval_episodes) keep the behaviour
                                  run's last checkpoint and random play apart (with 4, random play scored 1.0 on LBF)
    offline (offline_dataset=)    offline_steps=20 offline_test_interval=10 offline_log_interval=10 test_nepisode=2
    evaluate=True                 test_nepisode=2
    any other (online training)   t_max=200 test_nepisode=2 (t_max=400 where the command sets t_max itself,
                                  e.g. a resume that trains further than the run it resumes)

A marker with overrides, `<!-- runnable: key=value ... -->`, replaces these for every `src/main.py` command of
its block (the first run of the README trains long enough for the collection after it to beat random play).
Blocks without the marker (installation, the test suite, TensorBoard's server, a hosted LLM) are not run.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

from utils.paths import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")
MARKER = re.compile(r"^<!--\s*runnable(?::\s*(?P<overrides>.*?))?\s*-->\s*$")
COMMENT_LINE = re.compile(r"^<!--.*-->\s*$")

OFFLINE = {"offline_steps": "20", "offline_test_interval": "10", "offline_log_interval": "10", "test_nepisode": "2"}
COLLECT = {}
EVALUATE = {"test_nepisode": "2"}
ONLINE = {"t_max": "200", "test_nepisode": "2"}


def runnable_blocks(text):
    """[(overrides or None, [lines])] of the bash blocks marked runnable, in order."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != "```bash":
            continue
        j = i - 1
        while j >= 0 and (not lines[j].strip() or (COMMENT_LINE.match(lines[j].strip())
                                                   and not MARKER.match(lines[j].strip()))):
            j -= 1
        marker = MARKER.match(lines[j].strip()) if j >= 0 else None
        if not marker:
            continue
        end = lines.index("```", i + 1)
        overrides = marker.group("overrides")
        blocks.append((dict(kv.split("=", 1) for kv in overrides.split()) if overrides else None, lines[i + 1:end]))
    return blocks


def logical_lines(block):
    """Lines with their `\\` continuations joined."""
    out, current = [], ""
    for line in block:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            out.append(current + line)
            current = ""
    if current:
        out.append(current)
    return out


def split_comment(line):
    """(command, trailing comment) of a shell line: the comment starts at a ` #` outside quotes."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip(), line[k:]
    return line.rstrip(), ""


def small_scale(command, overrides=None):
    """A `src/main.py` command with the small-scale overrides of the module docstring."""
    if "src/main.py" not in command:
        return command
    tokens = shlex.split(command, posix=False)
    keys = {t.split("=", 1)[0]: t for t in tokens if "=" in t and not t.startswith("-")}
    if overrides is None:
        if "--config=collect" in tokens:
            overrides = COLLECT
        elif "offline_dataset" in keys:
            overrides = OFFLINE
        elif keys.get("evaluate") == "evaluate=True":
            overrides = EVALUATE
        else:
            overrides = dict(ONLINE, t_max="400") if "t_max" in keys else ONLINE
    kept = [t for t in tokens if not ("=" in t and not t.startswith("-") and t.split("=", 1)[0] in overrides)]
    if "with" not in kept:
        kept.append("with")
    return " ".join(kept + [f"{k}={v}" for k, v in overrides.items()])


def script_of(text):
    lines = ["set -euo pipefail"]
    for overrides, block in runnable_blocks(text):
        for line in logical_lines(block):
            command, comment = split_comment(line)
            lines.append(small_scale(command, overrides) if command else comment)
    return "\n".join(lines) + "\n"


def test_marker_parsing_and_small_scale():
    text = ("<!-- runnable: t_max=50 -->\n```bash\n.venv/bin/python src/main.py --config=qmix --env-config=lbf "
            "with seed=1   # note\n```\n\n```bash\n./install.sh\n```\n<!-- lead: x -->\n<!-- runnable -->\n\n"
            "```bash\nfor s in 2; do\n  .venv/bin/python src/main.py --config=a \\\n    with seed=$s t_max=9\ndone\n"
            ".venv/bin/python src/main.py --config=collect with behaviour_checkpoint=$RUN 'x={\"a\": 1}'\n```\n")
    script = script_of(text).splitlines()
    assert script[1] == ".venv/bin/python src/main.py --config=qmix --env-config=lbf with seed=1 t_max=50"
    assert "./install.sh" not in script
    assert script[3] == ".venv/bin/python src/main.py --config=a with seed=$s t_max=400 test_nepisode=2"
    assert script[5].endswith("with behaviour_checkpoint=$RUN 'x={\"a\": 1}'")


@pytest.mark.long
def test_readme_runnable_commands_run_as_written(tmp_path):
    """The README's runnable blocks, in order, at small scale, in a scratch copy of the repository."""
    with open(README, encoding="utf-8") as f:
        script = script_of(f.read())
    assert script.count("src/main.py") >= 5, "the README lost its runnable first-week commands"
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("src", "config", "scripts"):
        shutil.copytree(os.path.join(REPO_ROOT, name), root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.symlink(os.path.join(REPO_ROOT, ".venv"), root / ".venv")
    (root / "readme.sh").write_text(script)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "readme.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (f"a README command failed (exit {proc.returncode}).\nscript:\n{script}\n"
                                  f"stderr (end):\n{proc.stderr[-6000:]}\nstdout (end):\n{proc.stdout[-3000:]}")


# ----- files named in the README and the guides -----
DOCS = [README, *sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))]
TOP_LEVEL = ("src", "scripts", "config", "docs", "tests", "bench", "shared")
PATH = re.compile(r"(?<![\w./<-])((?:%s)/[\w./*-]*[\w/*]|[\w-]+\.(?:sh|txt|toml|md))" % "|".join(TOP_LEVEL))
# named by the README as what an issue to come creates ("src/labeling/ (create it ...)"), not yet in the repo
TO_BE_CREATED = {"src/labeling/", "src/augmenters/", "tests/labeling/", "tests/augmenters/"}
# file names mentioned as names, not as paths from the repository root
NAMES = {"README.md", "cout.txt", "returns.md", "reference_returns.md", "requirements-smax.txt", "scores.md"}


def mentioned_paths(path):
    """Repository paths named in code: fenced blocks, indented blocks and `inline` spans. A path that runs into a
    placeholder (`src/envs/<name>.py`, `results/...`) is not checked."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fenced = re.findall(r"^```[a-z]*\n([\s\S]*?)^```", text, re.M)
    rest = re.sub(r"^```[a-z]*\n[\s\S]*?^```", "", text, flags=re.M)
    spans = fenced + re.findall(r"^    .*$", rest, re.M) + re.findall(r"`([^`\n]+)`", rest)
    found = set()
    for span in spans:
        span = span.replace("./", " ")  # ./install.sh
        for m in PATH.finditer(span):
            if span[m.end():m.end() + 1] != "<" and m.group(1) not in NAMES:
                found.add(m.group(1))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_file_a_doc_names_exists(doc):
    missing = sorted(p for p in mentioned_paths(doc) - TO_BE_CREATED
                     if not glob.glob(os.path.join(REPO_ROOT, p.rstrip("/"))))
    assert not missing, f"{os.path.relpath(doc, REPO_ROOT)} names files that are not in the repository: {missing}"


def heading_anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    with open(path, encoding="utf-8") as f:
        headings = re.findall(r"^#{1,6} (.+)$", f.read(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_link_of_a_doc_resolves(doc):
    with open(doc, encoding="utf-8") as f:
        text = re.sub(r"`[^`\n]*`", "", re.sub(r"^```[a-z]*\n[\s\S]*?^```", "", f.read(), flags=re.M))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = []
    for link in links:
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        target, _, anchor = link.partition("#")
        target_path = os.path.normpath(os.path.join(os.path.dirname(doc), target)) if target else doc
        if not os.path.exists(target_path):
            broken.append(link)
        elif anchor and target_path.endswith(".md") and anchor not in heading_anchors(target_path):
            broken.append(link)
    assert not broken, f"{os.path.relpath(doc, REPO_ROOT)}: links that lead nowhere: {broken}"
