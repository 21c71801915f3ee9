"""The qllm mixer's per-state inputs: the TFCAF's weights and bias, computed in the sandboxed worker when
episodes enter the replay buffer and stored as the batch fields `tfcaf_w` [n] and `tfcaf_b` [1].

Each state is evaluated once (not once per sampled batch), so a training step does no TFCAF work at all and
the mixer is a weighted sum of plain tensors (modules/mixers/qllm.py). Which file is used, and why it is
trusted, is decided by qllm.loader; an unsigned file is validated again here on states of this run's env.
"""
import os

import numpy as np

from modules.mixers.qllm import FIELDS
from utils.paths import REPO_ROOT, repo_relative

TRUST_WORDS = {"shipped reference": "a shipped reference with its packaged SHA-256 (MANIFEST.json)",
               "signed record": "its validation record, signed by this installation",
               "re-validated": "validated again in the sandbox on this run's states"}


def display_path(path):
    """`path` relative to the repository root when it lies inside it (so run records compare across clones), else
    absolute."""
    path = os.path.abspath(path)
    try:
        rel = os.path.relpath(path, REPO_ROOT)
    except ValueError:  # another drive
        return path
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def resolve_tfcaf_path(args):
    from qllm.loader import TFCAFLoadError, shipped_reference  # imported on use: see TFCAFFeatures

    if args.tfcaf_path:
        return repo_relative(args.tfcaf_path)
    if not args.env_config:
        raise TFCAFLoadError("tfcaf_path is null and the run's env config is unknown; set tfcaf_path=<file>")
    return shipped_reference(args.env_config)


def revalidator(args, n_states=512):
    """`revalidate(source, igm_gate)` on states sampled from this run's env (seeded by the run's seed)."""
    def revalidate(source, igm_gate):
        from qllm.states import sample_states
        from qllm.validate import ValidationContext, validate_source

        states = sample_states(args.env, dict(args.env_args), n=n_states, seed=int(args.seed or 0))
        ctx = ValidationContext(n_agents=args.n_agents, state_size=int(args.state_shape), states=states,
                                igm_gate=igm_gate)
        return validate_source(source, ctx)
    return revalidate


class TFCAFFeatures:
    """Fills `tfcaf_w`, `tfcaf_b` of episode batches from the TFCAF worker; resolves `args.tfcaf_path` (null: the
    shipped reference) and `args.igm_gate` (null: the setting recorded with the function) and records the
    function's identity in `args.tfcaf_sha256` (the mixer's checkpoints carry it). `config` (the run's config
    dict, saved beside its checkpoints) gets the resolved path and gate too, so it says what the run trained with.
    The log says which function, its SHA-256, the gate and why it was trusted; `run_info` (the Sacred run's info
    dict, info.json) gets the same under "tfcaf" at once, and the worker's cost as the run goes."""

    def __init__(self, args, log, process=None, run_info=None, config=None):
        # imported on use: the loader imports llm/, which a run whose mixer wants no features (wants_features, called
        # by every run's setup) never needs
        from qllm.loader import load_tfcaf

        path = resolve_tfcaf_path(args)
        self.spec = load_tfcaf(path, env_config=args.env_config, n_agents=args.n_agents,
                               state_size=int(args.state_shape), igm_gate=args.igm_gate, revalidate=revalidator(args),
                               log=log)
        gate, self.gate_from = args.igm_gate, "the run's config"
        if gate is None:
            gate, self.gate_from = ((True, "the default (nothing recorded with the function)")
                                    if self.spec.igm_gate is None else (self.spec.igm_gate, "the function's record"))
        self.path = display_path(self.spec.path)
        args.tfcaf_path, args.igm_gate, args.tfcaf_sha256 = self.path, bool(gate), self.spec.sha256
        if config is not None:
            config.update(tfcaf_path=self.path, igm_gate=bool(gate))
        self.n_agents, self.log, self.run_info = args.n_agents, log, run_info
        log.info(f"QLLM trains with the TFCAF {self.path} (sha256 {self.spec.sha256}, {self.spec.form} form), "
                 f"igm_gate={bool(gate)} (from {self.gate_from}); trusted by "
                 f"{TRUST_WORDS.get(self.spec.trust, self.spec.trust)}")
        self.worker = self.spec.start_worker(args.n_agents, bool(gate), timeout_s=float(args.tfcaf_timeout_s),
                                             memory_mb=int(args.tfcaf_memory_mb), process=process)
        self._record()

    @property
    def scheme(self):
        return {"tfcaf_w": {"vshape": (self.n_agents,)}, "tfcaf_b": {"vshape": (1,)}}

    def info(self):
        sandbox = self.worker.sandbox or {}
        return {"path": self.path, "sha256": self.spec.sha256, "form": self.spec.form, "trust": self.spec.trust,
                "igm_gate": self.worker.igm_gate, "igm_gate_from": self.gate_from, "seccomp": sandbox.get("seccomp"),
                "worker_calls": self.worker.calls,
                "worker_ms_per_1000_states": round(self.worker.cost_per_1000_states_ms(), 3)}

    def _record(self):
        if self.run_info is not None:
            self.run_info["tfcaf"] = self.info()

    def annotate(self, batch, t_env=None):
        """Compute the fields for the filled time steps of every episode in `batch` (padding stays 0)."""
        if self.worker.sandbox is None:
            sandbox = self.worker.wait_ready()
            seccomp = "on" if sandbox.get("seccomp") else f"off: {sandbox.get('seccomp_reason')}"
            self.log.info(f"TFCAF {self.path} (sha256 {self.spec.sha256[:16]}...) runs in a sandboxed worker "
                          f"(seccomp {seccomp})")
            self._record()
        T = batch.max_t_filled()
        states = batch["state"][:, :T]
        B, S = states.shape[0], states.shape[-1]

        def where(row):
            at = f"t_env {t_env}" if t_env is not None else "episode insertion"
            return at if row is None else f"{at}, episode {row // T} of the batch, time step {row % T}"

        flat = states.reshape(B * T, S).cpu().numpy()
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():  # the env's fault, not the TFCAF's: say so before the function sees it
            raise ValueError(f"the env produced a state with NaN or inf ({where(int(np.argmin(finite)))}); the "
                             f"TFCAF cannot credit it: check the env's get_state()")
        w, b = self.worker.evaluate(flat, where=where)
        batch.update({"tfcaf_w": w.reshape(B, T, self.n_agents), "tfcaf_b": b.reshape(B, T, 1)},
                     ts=slice(0, T), mark_filled=False)
        if self.worker.calls == 1 or self.worker.calls % 1000 == 0:
            self._record()
        return batch

    def close(self):
        self._record()
        self.worker.close()


def wants_features(args):
    """The batch fields this run's mixer declares (modules.mixers.BATCH_FIELDS)."""
    from modules.mixers import BATCH_FIELDS

    fields = tuple(BATCH_FIELDS.get(args.mixer or "", ()))
    if fields and fields != FIELDS:
        raise ValueError(f"no provider for the batch fields {fields} of mixer '{args.mixer}'")
    return bool(fields)


def make_features(args, log, process=None, run_info=None, config=None):
    """The providers of the batch fields this run's mixer declares ([] for mixers that declare none). `config`: the
    run's config dict, which gets the values they resolve (qllm: tfcaf_path, igm_gate)."""
    return [TFCAFFeatures(args, log, process=process, run_info=run_info, config=config)] if wants_features(args) \
        else []
