"""The records of TFCAF artifacts, in one place: their hashes, `<name>.meta.json`, the signed validation records
and the shipped references' MANIFEST.json. Generation (run.tfcaf), validation (scripts/qllm_validate.py --write-meta),
the manifest command (qllm.tfcafs.manifest) and the loader (qllm.loader) read and write them only through here.

On disk (formats unchanged since they were introduced; only the record's file name changed, in issue 12):
* `<folder>/<name>.py` and its record `<folder>/<name>.meta.json`: generation metadata (for a generated
  `tfcaf.py`) plus `sha256` (of the file's bytes) and `validation_record` (below). One record per TFCAF file, so
  validating `other.py` never touches the record of `my_tfcaf.py` beside it.
* `<folder>/meta.json`: the one record per folder written before issue 12 (generation folders
  results/tfcafs/<env>/<id>/, and the old validator). Still read, for the file it names (`file`), or for `tfcaf.py`
  when it names none; never written any more. A `<name>.meta.json` beside the file takes precedence.
* `src/qllm/tfcafs/MANIFEST.json`: {env config: {"file", "sha256", "igm_gate", "state_size", "n_agents"}} for the
  shipped, hand-written references. Only the packaged one means anything (a copy elsewhere vouches for nothing).

A validation record says "this file (SHA-256) passed validation under policy version P, for env config E with the
IGM gate G, with this report". It is trusted only with a valid HMAC-SHA256 signature made with this
installation's key: `<config dir>/llm-pymarl/validator.key` ($XDG_CONFIG_HOME, else ~/.config), 32 random bytes
created on first use with mode 0600. A hand-written meta.json holding a file name and its hash therefore proves
nothing: without a valid signature the loader validates the file again before training. Someone who can read the
key can forge records, so the key is as sensitive as the code that checks it (README, Security).

Hashes are utils.files.sha256_bytes of the very bytes that are checked and run (read_tfcaf, write_tfcaf).
"""
import hashlib
import hmac
import json
import os
import secrets
import stat

from qllm.policy import POLICY_VERSION
from utils.files import sha256_bytes, write_json_atomic, write_text_atomic

KEY_FILE = "validator.key"
SIGNED_FIELDS = ("sha256", "policy_version", "env_config", "igm_gate", "form", "n_agents", "state_size",
                 "validation")
TFCAF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfcafs")  # the shipped references
MANIFEST = "MANIFEST.json"
META_SUFFIX = ".meta.json"  # `<name>.meta.json` is the record of `<name>.py`
LEGACY_META = "meta.json"  # the one record per folder of before issue 12: read, never written
TFCAF_FILE = "tfcaf.py"  # the file name of a generated TFCAF in its results/tfcafs/<env>/<id>/ folder


class RecordKeyError(RuntimeError):
    pass


class NoShippedReference(KeyError):
    """There is no shipped reference TFCAF for an env config (the message says which there are)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------------------------------------
# TFCAF files and their records (<name>.meta.json)


def read_tfcaf(path):
    """(bytes, SHA-256) of a TFCAF file, from one read: the hash is of exactly the bytes the caller checks."""
    with open(path, "rb") as f:
        raw = f.read()
    return raw, sha256_bytes(raw)


def write_tfcaf(folder, source):
    """Write `source` as `<folder>/tfcaf.py`; returns (path, SHA-256 of the bytes written)."""
    data = source.encode("utf-8")
    path = os.path.join(folder, TFCAF_FILE)
    with open(path, "wb") as f:
        f.write(data)
    return path, sha256_bytes(data)


def meta_path(tfcaf_path):
    """The record of a TFCAF file, written beside it: `<name>.meta.json` for `<name>.py` (`<file>.meta.json` for a
    file not ending in .py)."""
    folder, name = os.path.split(os.path.abspath(tfcaf_path))
    stem = name[:-3] if name.endswith(".py") and len(name) > 3 else name
    return os.path.join(folder, stem + META_SUFFIX)


def _read_json_object(path, strict):
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        if strict:
            raise
        return None
    if not isinstance(meta, dict):
        if strict:
            raise ValueError(f"{path} does not hold a JSON object")
        return None
    return meta


def _legacy_meta(tfcaf_path, strict=False):
    """(path, meta) of a folder's old meta.json when it describes this file (it names it in `file`, or names no file
    and this is a generation's tfcaf.py), else (None, None)."""
    path = os.path.join(os.path.dirname(os.path.abspath(tfcaf_path)), LEGACY_META)
    if not os.path.isfile(path):
        return None, None
    meta = _read_json_object(path, strict)
    if meta is None or meta.get("file", TFCAF_FILE) != os.path.basename(tfcaf_path):
        return None, None
    return path, meta


def record_path(tfcaf_path):
    """The file that holds the record of a TFCAF file: `<name>.meta.json`, else an old folder's meta.json that
    describes it; None when there is neither."""
    path = meta_path(tfcaf_path)
    if os.path.isfile(path):
        return path
    return _legacy_meta(tfcaf_path)[0]


def read_meta(tfcaf_path, strict=False):
    """The record of a TFCAF file (generation metadata and the signed record): `<name>.meta.json` beside it, else an
    old folder's meta.json that describes it (see record_path); {} when there is none. An unreadable one counts as
    none, or raises (OSError, ValueError) with `strict`."""
    path = meta_path(tfcaf_path)
    if os.path.isfile(path):
        return _read_json_object(path, strict) or {}
    return _legacy_meta(tfcaf_path, strict)[1] or {}


def validate_command(tfcaf_path, env_config=None, igm_gate=None):
    """The command line that validates a file and signs its record (for messages to people)."""
    gate = " --no-igm-gate" if igm_gate is False else ""
    return (f"python scripts/qllm_validate.py {tfcaf_path} --env-config {env_config or '<env config>'}{gate} "
            f"--write-meta")


def missing_record(tfcaf_path):
    """Why a file has no record to trust it by, naming the file that would hold it."""
    name, expected = os.path.basename(tfcaf_path), os.path.basename(meta_path(tfcaf_path))
    found = record_path(tfcaf_path)
    if found is None:
        return f"there is no validation record for {name} (expected {expected} beside it)"
    return f"{os.path.basename(found)} beside it holds no signed validation record for {name}"


def write_meta(tfcaf_path, meta):
    """Write the record of a TFCAF file, `<name>.meta.json` beside it (atomically); returns its path."""
    path = meta_path(tfcaf_path)
    write_json_atomic(path, meta)
    return path


def record_validation(meta, *, sha256, env_config, igm_gate, n_agents, state_size, validation):
    """Record in `meta` the file's SHA-256 and, for a passing `validation` report (a dict), its validation record
    signed by this installation. The hash is recorded first: when the key is unusable (RecordKeyError, OSError)
    the meta still names the file, and training with it validates it again."""
    meta["sha256"] = sha256
    meta["validation_record"] = sign_record(sha256=sha256, env_config=env_config, igm_gate=igm_gate,
                                            form=(validation.get("checks") or {}).get("form", "tfcaf"),
                                            n_agents=n_agents, state_size=state_size, validation=validation)
    return meta


def signed_record(tfcaf_path, sha256, *, env_config, n_agents=None, state_size=None, igm_gate=None):
    """(record, None) when the file's record (read_meta) holds a signed validation record that makes it trainable
    in this run (see record_problem), else (None, why). A record among the shipped references is never read."""
    if is_shipped_location(tfcaf_path):
        return None, "it sits among the shipped references but is not one of them"
    record = read_meta(tfcaf_path).get("validation_record")
    if record is None:
        return None, missing_record(tfcaf_path)
    why = record_problem(record, sha256=sha256, env_config=env_config, n_agents=n_agents, state_size=state_size,
                         igm_gate=igm_gate)
    return (record, None) if why is None else (None, why)


# ----------------------------------------------------------------------------------------------------------------
# Signed validation records


def config_dir():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "llm-pymarl")


def key_path():
    return os.path.join(config_dir(), KEY_FILE)


def _key():
    path = key_path()
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # written in full under another name, then linked into place: a process starting at the same moment sees
        # either no key or the whole key, and only one key ever wins
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RecordKeyError(f"{path} is readable by other users (mode {oct(mode & 0o777)}): anyone who can read it "
                             f"can sign TFCAF records. Run: chmod 600 {path}")
    with open(path, "rb") as f:
        key = f.read()
    if len(key) < 32:
        raise RecordKeyError(f"{path} is damaged ({len(key)} bytes); delete it and re-validate your TFCAFs")
    return key


def _digest(fields):
    payload = json.dumps({k: fields.get(k) for k in SIGNED_FIELDS}, sort_keys=True, separators=(",", ":"),
                         default=str).encode()
    return hmac.new(_key(), payload, hashlib.sha256).hexdigest()


def sign_record(*, sha256, env_config, igm_gate, form, n_agents, state_size, validation):
    """A signed record for a file that has just passed validation (`validation`: the report as a dict)."""
    if not validation.get("ok"):
        raise ValueError("only a passing validation report can be signed")
    record = {"sha256": sha256, "policy_version": POLICY_VERSION, "env_config": env_config, "igm_gate": bool(igm_gate),
              "form": form, "n_agents": int(n_agents), "state_size": int(state_size), "validation": validation}
    record["signature"] = _digest(record)
    return record


def record_problem(record, *, sha256, env_config, n_agents=None, state_size=None, igm_gate=None):
    """Why `record` does not make the file trainable here, or None when it does. `env_config` None (a run whose
    env config is unknown) never matches; `igm_gate` None accepts the recorded gate."""
    if not isinstance(record, dict):
        return "there is no signed validation record"
    signature = record.get("signature")
    try:
        expected = _digest(record)
    except (OSError, RecordKeyError) as e:  # no usable key here: nothing can be verified, so validate again
        return f"its record cannot be checked ({e})"
    if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
        return "its validation record is not signed by this installation's validator"
    if record.get("sha256") != sha256:
        return f"the file's SHA-256 {sha256[:16]}... is not the one validated ({str(record.get('sha256'))[:16]}...)"
    if record.get("policy_version") != POLICY_VERSION:
        return f"it was validated under policy version {record.get('policy_version')}, this is {POLICY_VERSION}"
    if env_config is None:
        return "this run's env config is unknown, so the record cannot be matched to it"
    for key, want in (("env_config", env_config), ("n_agents", n_agents), ("state_size", state_size),
                      ("igm_gate", None if igm_gate is None else bool(igm_gate))):
        if want is not None and record.get(key) != want:
            return f"it was validated for {key} {record.get(key)!r}, this run has {want!r}"
    if not (record.get("validation") or {}).get("ok"):
        return "its validation report is not a pass"
    return None


# ----------------------------------------------------------------------------------------------------------------
# The shipped references' manifest


def manifest_path():
    return os.path.join(TFCAF_DIR, MANIFEST)


def read_manifest():
    """{env config: {"file", "sha256", "igm_gate", "state_size", "n_agents"}} as packaged."""
    with open(manifest_path()) as f:
        return json.load(f)


def manifest_entry(file, sha256, igm_gate, state_size, n_agents):
    """One MANIFEST.json entry."""
    return {"file": file, "sha256": sha256, "igm_gate": bool(igm_gate), "state_size": int(state_size),
            "n_agents": int(n_agents)}


def manifest_json(manifest):
    """MANIFEST.json's exact text for `manifest` (sorted keys, two-space indent, final newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write_manifest(manifest):
    write_text_atomic(manifest_path(), manifest_json(manifest))


def shipped_reference(env_config):
    """(absolute path, manifest entry) of the shipped reference TFCAF for an env config name; NoShippedReference
    (a KeyError) when there is none, or no manifest."""
    if not os.path.isfile(manifest_path()):
        raise NoShippedReference(f"no shipped reference TFCAFs: {manifest_path()} is missing. Set tfcaf_path=<file> "
                                 f"(or generate one with --config=qllm_generate)")
    manifest = read_manifest()
    if env_config not in manifest:
        raise NoShippedReference(f"no shipped reference TFCAF for env config '{env_config}' (there is one for: "
                                 f"{', '.join(sorted(manifest))}). Set tfcaf_path=<file> or generate one with "
                                 f"--config=qllm_generate --env-config={env_config}")
    entry = manifest[env_config]
    return os.path.join(TFCAF_DIR, entry["file"]), entry


def is_shipped_location(path):
    """Whether `path` (links resolved) is a file directly in the shipped references' folder."""
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(TFCAF_DIR)


def shipped_entry(path, sha256, env_config=None, n_agents=None, state_size=None, igm_gate=None):
    """(the packaged manifest's entry for `path`, None) when it is a shipped file with exactly the packaged hash and
    written for this run (its env config, sizes, and the gate when the run turns it on), else (None, why)."""
    if not is_shipped_location(path) or not os.path.isfile(manifest_path()):
        return None, "it is not a shipped reference"
    name = os.path.basename(path)
    manifest = read_manifest()
    configs = [c for c, e in manifest.items() if isinstance(e, dict) and e.get("file") == name]
    if not any(manifest[c].get("sha256") == sha256 for c in configs):
        return None, "it sits among the shipped references but its SHA-256 is not the packaged one"
    if env_config is None:
        return manifest[configs[0]], None
    if env_config not in configs:
        return None, f"it is the shipped reference for {', '.join(configs)}, not for env config '{env_config}'"
    entry = manifest[env_config]
    for key, want in (("n_agents", n_agents), ("state_size", state_size)):
        if want is not None and entry.get(key) not in (None, want):
            return None, f"the shipped reference was written for {key} {entry.get(key)}, this run has {want}"
    if igm_gate and not entry.get("igm_gate", True):  # written for raw weights: never checked under the gate
        return None, "the shipped reference was written for igm_gate false, this run turns the gate on"
    return entry, None
