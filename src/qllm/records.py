"""Validation records that cannot vouch for themselves: signed by this installation's validator.

A record says "this file (SHA-256) passed validation under policy version P, for env config E with the IGM gate
G, with this report". It is trusted only with a valid HMAC-SHA256 signature made with this installation's key:
`<config dir>/llm-pymarl/validator.key` ($XDG_CONFIG_HOME, else ~/.config), 32 random bytes created on first
use with mode 0600. A hand-written meta.json holding a file name and its hash therefore proves nothing: without
a valid signature the loader validates the file again before training. Someone who can read the key can forge
records, so the key is as sensitive as the code that checks it (README, Security).
"""
import hashlib
import hmac
import json
import os
import secrets
import stat

from qllm.policy import POLICY_VERSION

KEY_FILE = "validator.key"
SIGNED_FIELDS = ("sha256", "policy_version", "env_config", "igm_gate", "form", "n_agents", "state_size",
                 "validation")


class RecordKeyError(RuntimeError):
    pass


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
