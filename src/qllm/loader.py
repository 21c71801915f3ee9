"""Decide whether a TFCAF file may be trained with, without running it in this process.

    spec = load_tfcaf(path, env_config="lbf", n_agents=2, state_size=14, revalidate=fn, log=log)
    worker = spec.start_worker(timeout_s=30)       # qllm.worker: the only place the code runs during training

A file is trainable when one of these holds (checked in this order):
1. it is a shipped reference in src/qllm/tfcafs/ and its SHA-256 equals the packaged MANIFEST.json entry
   (a MANIFEST.json anywhere else means nothing);
2. its record beside it (`<name>.meta.json`, or the old folder-wide meta.json of a generation folder; see
   qllm.records) holds a validation record signed by this installation's validator for this exact file, the
   current policy version and this run's env config, n_agents and state size;
3. otherwise it is validated again now (`revalidate(source, igm_gate)` -> ValidationReport, in the sandbox,
   on states of this run's env) and the log says so; without `revalidate` the load is refused.
The source is always checked against the static policy here (on the syntax tree; nothing is executed).
"""
import os
from dataclasses import dataclass, field

from qllm import records
from qllm.policy import PolicyError, check_source
from qllm.sandbox import clean_text
from utils.files import is_temp


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

    def start_worker(self, n_agents, igm_gate, timeout_s=30.0, memory_mb=1024, process=None):
        from qllm.worker import TFCAFWorker

        return TFCAFWorker(self.source, form=self.form, n_agents=n_agents, sha256=self.sha256, igm_gate=igm_gate,
                           name=f"TFCAF {os.path.basename(self.path)}", timeout_s=timeout_s, memory_mb=memory_mb,
                           process=process)


def shipped_reference(env_config):
    """Path of the shipped reference TFCAF for an env config name (src/qllm/tfcafs/MANIFEST.json)."""
    try:
        return records.shipped_reference(env_config)[0]
    except records.NoShippedReference as e:
        raise TFCAFLoadError(str(e)) from None


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
    raw, digest = records.read_tfcaf(path)  # what is checked, hashed and run are the same bytes
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TFCAFLoadError(f"{path} is not UTF-8 text: {e}") from None
    try:
        form = check_source(source).form
    except PolicyError as e:
        raise TFCAFLoadError(f"{path} violates the TFCAF policy ({e.stage}): "
                             f"{clean_text('; '.join(e.violations))}") from None
    spec = TFCAFSpec(path=path, sha256=digest, source=source, form=form)

    shipped, why = records.shipped_entry(path, digest, env_config, n_agents, state_size, igm_gate)
    if shipped is not None:
        spec.igm_gate, spec.trust = bool(shipped.get("igm_gate", True)), "shipped reference"
        return spec
    if not records.is_shipped_location(path):  # a record among the shipped references means nothing
        record, why = records.signed_record(path, digest, env_config=env_config, n_agents=n_agents,
                                            state_size=state_size, igm_gate=igm_gate)
        if record is not None:
            spec.igm_gate, spec.trust, spec.report = bool(record["igm_gate"]), "signed record", record["validation"]
            return spec
    gate = True if igm_gate is None else bool(igm_gate)
    if revalidate is None:
        raise TFCAFLoadError(f"{path} is not trusted: {why}. Validate it with "
                             f"{records.validate_command(path, env_config, igm_gate)} to sign a record for it")
    if log is not None:
        log.warning(f"{path}: {why}; validating it again in the sandbox before training (igm_gate={gate}). To "
                    f"skip this next time, sign a record for it: {records.validate_command(path, env_config, gate)}")
    report = revalidate(source, gate)
    if not report.ok:
        raise TFCAFLoadError(f"{path} failed validation at the '{report.stage}' check: "
                             f"{'; '.join(report.errors[:3])}. It cannot be trained with.")
    spec.igm_gate, spec.trust, spec.report = gate, "re-validated", report.to_dict()
    return spec
