"""Decide whether a TFCAF file may be trained with, without running it in this process.

    spec = load_tfcaf(path, env_config="lbf", n_agents=2, state_size=14, revalidate=fn, log=log)
    worker = spec.start_worker(timeout_s=30)       # qllm.worker: the only place the code runs during training

A file is trainable when one of these holds (checked in this order):
1. it is a shipped reference in src/qllm/tfcafs/ and its SHA-256 equals the packaged MANIFEST.json entry
   (a MANIFEST.json anywhere else means nothing);
2. meta.json next to it holds a validation record signed by this installation's validator (qllm.records) for
   this exact file, the current policy version and this run's env config, n_agents and state size;
3. otherwise it is validated again now (`revalidate(source, igm_gate)` -> ValidationReport, in the sandbox,
   on states of this run's env) and the log says so; without `revalidate` the load is refused.
The source is always checked against the static policy here (on the syntax tree; nothing is executed).
"""
import json
import os
from dataclasses import dataclass, field

from qllm.policy import PolicyError, check_source
from qllm.records import record_problem
from utils.files import is_temp, sha256_bytes

TFCAF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfcafs")
MANIFEST = "MANIFEST.json"


class TFCAFLoadError(RuntimeError):
    """The file cannot be used; the message says why and what to do."""


@dataclass
class TFCAFSpec:
    path: str
    sha256: str
    source: str
    form: str  # "tfcaf" or "legacy"
    igm_gate: bool = None  # the setting recorded with the file (None if unknown)
    trust: str = ""  # "shipped reference", "signed record" or "re-validated"
    report: dict = field(default_factory=dict)

    @property
    def legacy(self):
        return self.form == "legacy"

    def start_worker(self, n_agents, igm_gate, timeout_s=30.0, memory_mb=1024, process=None):
        from qllm.worker import TFCAFWorker

        return TFCAFWorker(self.source, form=self.form, n_agents=n_agents, sha256=self.sha256, igm_gate=igm_gate,
                           name=f"TFCAF {os.path.basename(self.path)}", timeout_s=timeout_s, memory_mb=memory_mb,
                           process=process)


def manifest_path():
    return os.path.join(TFCAF_DIR, MANIFEST)


def _manifest():
    with open(manifest_path()) as f:
        return json.load(f)


def shipped_reference(env_config):
    """Path of the shipped reference TFCAF for an env config name (src/qllm/tfcafs/MANIFEST.json)."""
    if not os.path.isfile(manifest_path()):
        raise TFCAFLoadError(f"no shipped reference TFCAFs: {manifest_path()} is missing. Set tfcaf_path=<file> "
                             f"(or generate one with --config=qllm_generate)")
    manifest = _manifest()
    if env_config not in manifest:
        raise TFCAFLoadError(f"no shipped reference TFCAF for env config '{env_config}' (available: "
                             f"{', '.join(sorted(manifest))}). Set tfcaf_path=<file> or generate one with "
                             f"--config=qllm_generate --env-config={env_config}")
    return os.path.join(TFCAF_DIR, manifest[env_config]["file"])


def _shipped_entry(path, digest, env_config=None, n_agents=None, state_size=None, igm_gate=None):
    """(the packaged manifest's entry for `path`, None) when it is a shipped file with exactly the packaged hash and
    written for this run (its env config, sizes, and the gate when the run turns it on), else (None, why)."""
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(TFCAF_DIR) or not os.path.isfile(manifest_path()):
        return None, "it is not a shipped reference"
    name = os.path.basename(path)
    manifest = _manifest()
    configs = [c for c, e in manifest.items() if isinstance(e, dict) and e.get("file") == name]
    if not any(manifest[c].get("sha256") == digest for c in configs):
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


def read_meta(path):
    """meta.json next to a TFCAF file (generation metadata and the signed record), or {}."""
    meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), "meta.json")
    if not os.path.isfile(meta_path):
        return {}
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def load_tfcaf(path, *, env_config=None, n_agents=None, state_size=None, igm_gate=None, revalidate=None, log=None):
    """TFCAFSpec of a trainable file; raises TFCAFLoadError saying why not and what to do.

    `igm_gate`: the run's setting (None: the recorded one, else True); a re-validation uses it."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    if is_temp(os.path.dirname(path)) or is_temp(path):
        raise TFCAFLoadError(f"{path} is inside an unfinished generation (a temporary folder); use a finished one "
                             f"from results/tfcafs/<env>/<id>/")
    if not os.path.isfile(path):
        raise TFCAFLoadError(f"no TFCAF file at {path}: give tfcaf_path=<file>, generate one with "
                             f"--config=qllm_generate, or leave tfcaf_path null to use the shipped reference")
    with open(path, "rb") as f:
        raw = f.read()
    digest = sha256_bytes(raw)
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TFCAFLoadError(f"{path} is not UTF-8 text: {e}") from None
    try:
        form = check_source(source).form
    except PolicyError as e:
        raise TFCAFLoadError(f"{path} violates the TFCAF policy ({e.stage}): {'; '.join(e.violations)}") from None
    spec = TFCAFSpec(path=path, sha256=digest, source=source, form=form)

    shipped, why = _shipped_entry(path, digest, env_config, n_agents, state_size, igm_gate)
    if shipped is not None:
        spec.igm_gate, spec.trust = bool(shipped.get("igm_gate", True)), "shipped reference"
        return spec
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(TFCAF_DIR):
        record = read_meta(path).get("validation_record")
        why = record_problem(record, sha256=digest, env_config=env_config, n_agents=n_agents, state_size=state_size,
                             igm_gate=igm_gate)
        if why is None:
            spec.igm_gate, spec.trust, spec.report = bool(record["igm_gate"]), "signed record", record["validation"]
            return spec
    gate = True if igm_gate is None else bool(igm_gate)
    if revalidate is None:
        raise TFCAFLoadError(f"{path} is not trusted: {why}. Validate it (python src/qllm/validate.py {path} "
                             f"--env-config <env config> --write-meta) to sign a record for it")
    if log is not None:
        log.warning(f"{path}: {why}; validating it again in the sandbox before training (igm_gate={gate})")
    report = revalidate(source, gate)
    if not report.ok:
        raise TFCAFLoadError(f"{path} failed validation at the '{report.stage}' check: "
                             f"{'; '.join(report.errors[:3])}. It cannot be trained with.")
    spec.igm_gate, spec.trust, spec.report = gate, "re-validated", report.to_dict()
    return spec
