"""Load a validated TFCAF file for training.

    tfcaf = load_tfcaf("results/tfcafs/lbf/<id>/tfcaf.py", n_agents=3)
    w, b = tfcaf.weights_and_bias(states)          # states [..., S] -> w [..., n], b [..., 1]
    q_tot, w_raw, b = tfcaf.q_tot(agent_qs, states, igm_gate=True)

The file's SHA-256 must equal the one recorded when it was validated: `sha256` in meta.json next to it
(written by `--config=qllm_generate` or `python src/qllm/validate.py FILE --env-config ENV --write-meta`),
or its entry in MANIFEST.json for the shipped references in src/qllm/tfcafs/. The source is checked
against the policy again and runs in the restricted namespace of qllm.runtime, in this process (the
hash proves it is the file that passed the sandbox). Works on any leading dims and device: new tensors
the code creates without `device=` land on the input's device, and so do its module-level constants
(the code is run once more per device).
"""
import contextlib
import hashlib
import json
import os

import torch

from qllm.policy import PolicyError
from qllm.runtime import exec_checked, exec_restricted

TFCAF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfcafs")
MANIFEST = "MANIFEST.json"


class TFCAFLoadError(RuntimeError):
    """The file cannot be used; the message says why and what to do."""


class TFCAFCallError(RuntimeError):
    """The function returned something unusable at training time."""


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def recorded_metadata(path):
    """(metadata dict, where) for a TFCAF file: its MANIFEST.json entry, else meta.json next to it; (None, None)."""
    folder, name = os.path.split(os.path.abspath(path))
    manifest_path = os.path.join(folder, MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        for config_name, entry in manifest.items():
            if isinstance(entry, dict) and os.path.basename(str(entry.get("file", ""))) == name:
                return dict(entry, env_config=config_name), manifest_path
    meta_path = os.path.join(folder, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if isinstance(meta, dict) and os.path.basename(str(meta.get("file", name))) == name:
            return meta, meta_path
    return None, None


class TFCAF:
    """A loaded TFCAF: `tfcaf(state, n_agents) -> (w, b)` or legacy `QLLMNetwork(agents_q, state) -> q_tot`."""

    def __init__(self, fn, form, path=None, sha256=None, igm_gate=None, n_agents=None, source=None):
        self.fn, self.form, self.path, self.sha256 = fn, form, path, sha256
        self.igm_gate = igm_gate  # the setting recorded with the file (None if unknown)
        self.n_agents = n_agents
        self.source = source
        self._per_device = {}

    def _fn_for(self, device):
        """The function, with its module-level tensors created on `device` (the code is re-run there once)."""
        if device.type == "cpu" or self.source is None:
            return self.fn
        key = str(device)
        if key not in self._per_device:
            entry = "QLLMNetwork" if self.legacy else "tfcaf"
            with torch.device(device):
                self._per_device[key] = exec_checked(self.source, entry, self.form)[0]
        return self._per_device[key]

    @property
    def legacy(self):
        return self.form == "legacy"

    def __deepcopy__(self, memo):  # stateless: target mixers share it
        return self

    def __repr__(self):
        return f"TFCAF({self.path!r}, form={self.form}, sha256={str(self.sha256)[:12]}...)"

    def _n(self, n_agents):
        n = n_agents or self.n_agents
        if not n:
            raise ValueError("n_agents is unknown: pass it to load_tfcaf(..., n_agents=) or to this call")
        return int(n)

    def weights_and_bias(self, states, n_agents=None):
        """states [..., S] -> (w [..., n], b [..., 1]) as the function returns them (no gate)."""
        if self.legacy:
            raise TypeError("a legacy QLLMNetwork(agents_q, global_state) gives Q_tot, not weights; use q_tot()")
        n = self._n(n_agents)
        lead, S = states.shape[:-1], states.shape[-1]
        flat = states.reshape(-1, S)
        with _on_device(states.device):
            out = self._fn_for(states.device)(flat, n)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise TFCAFCallError(f"{self._where()} must return (weights, bias) tensors, got {type(out).__name__}")
        w, b = out
        rows = flat.shape[0]
        if w.shape != (rows, n) or b.shape != (rows, 1):
            raise TFCAFCallError(f"{self._where()} returned weights {list(w.shape)} and bias {list(b.shape)} for "
                                 f"states {list(flat.shape)}; expected [{rows}, {n}] and [{rows}, 1] (wrong env or "
                                 f"n_agents for this TFCAF?)")
        return w.to(states.dtype).reshape(*lead, n), b.to(states.dtype).reshape(*lead, 1)

    def q_tot(self, agent_qs, states, igm_gate=True):
        """agent_qs [..., n], states [..., S] -> (q_tot [..., 1], raw weights or None, bias or None).

        Q_tot = sum_i g(w_i) Q_i + b with g = abs when igm_gate, identity otherwise. A legacy function
        computes Q_tot itself (validation checked its monotonicity when the gate was on)."""
        if self.legacy:
            lead, n = agent_qs.shape[:-1], agent_qs.shape[-1]
            with _on_device(states.device):
                out = self._fn_for(states.device)(agent_qs.reshape(-1, n), states.reshape(-1, states.shape[-1]))
            if not isinstance(out, torch.Tensor) or out.numel() != agent_qs.reshape(-1, n).shape[0]:
                raise TFCAFCallError(f"{self._where()} must return Q_tot [B, 1], got "
                                     f"{list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
            return out.to(agent_qs.dtype).reshape(*lead, 1), None, None
        w, b = self.weights_and_bias(states, agent_qs.shape[-1])
        used = w.abs() if igm_gate else w
        return (used * agent_qs).sum(dim=-1, keepdim=True) + b, w, b

    __call__ = weights_and_bias

    def _where(self):
        return f"TFCAF {os.path.basename(self.path) if self.path else '<source>'} ({self.form} form)"


@contextlib.contextmanager
def _on_device(device):
    """Factory calls without device= create tensors on the input's device (a no-op on the CPU)."""
    if device.type == "cpu":
        yield
    else:
        with torch.device(device):
            yield


def load_tfcaf(path, verify_hash=True, n_agents=None):
    """Read, hash-check, policy-check and load a TFCAF file; raises TFCAFLoadError with what to do."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(path):
        raise TFCAFLoadError(f"no TFCAF file at {path}: give tfcaf_path=<file>, generate one with "
                             f"--config=qllm_generate, or leave tfcaf_path null to use the shipped reference")
    with open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    meta, where = recorded_metadata(path)
    if verify_hash:
        expected = (meta or {}).get("sha256")
        if not expected:
            raise TFCAFLoadError(
                f"{path} has no recorded SHA-256 (no meta.json next to it and no entry in a MANIFEST.json), so "
                f"there is no proof it passed validation. Validate it and record its hash with: python "
                f"src/qllm/validate.py {path} --env-config <env config> --write-meta")
        if expected != digest:
            raise TFCAFLoadError(
                f"{path} has SHA-256 {digest}, but {where} records {expected}: the file changed after it was "
                f"validated. Re-validate it (python src/qllm/validate.py {path} --env-config <env config> "
                f"--write-meta) or restore the validated version.")
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TFCAFLoadError(f"{path} is not UTF-8 text: {e}") from None
    try:
        fn, form = exec_restricted(source, filename="<tfcaf>")
    except PolicyError as e:
        raise TFCAFLoadError(f"{path} violates the TFCAF policy ({e.stage}): {'; '.join(e.violations)}") from None
    except Exception as e:  # noqa: BLE001 (its top-level code failed)
        raise TFCAFLoadError(f"running {path} failed: {type(e).__name__}: {e}") from None
    gate = (meta or {}).get("igm_gate")
    return TFCAF(fn, form, path=path, sha256=digest, igm_gate=None if gate is None else bool(gate),
                 n_agents=n_agents, source=source)


def manifest_path():
    return os.path.join(TFCAF_DIR, MANIFEST)


def shipped_reference(env_config):
    """Path of the shipped reference TFCAF for an env config name (src/qllm/tfcafs/MANIFEST.json)."""
    mpath = manifest_path()
    if not os.path.isfile(mpath):
        raise TFCAFLoadError(f"no shipped reference TFCAFs: {mpath} is missing. Set tfcaf_path=<file> "
                             f"(or generate one with --config=qllm_generate)")
    with open(mpath) as f:
        manifest = json.load(f)
    if env_config not in manifest:
        raise TFCAFLoadError(f"no shipped reference TFCAF for env config '{env_config}' (available: "
                             f"{', '.join(sorted(manifest))}). Set tfcaf_path=<file> or generate one with "
                             f"--config=qllm_generate --env-config={env_config}")
    return os.path.join(TFCAF_DIR, manifest[env_config]["file"])
