"""The qllm mixer's per-state inputs: the TFCAF's weights and bias, computed in the sandboxed worker when
episodes enter the replay buffer and stored as the batch fields `tfcaf_w` [n] and `tfcaf_b` [1].

Each state is evaluated once (not once per sampled batch), so a training step does no TFCAF work at all and
the mixer is a weighted sum of plain tensors (modules/mixers/qllm.py). Which file is used, and why it is
trusted, is decided by qllm.loader; an unsigned file is validated again here on states of this run's env.
"""
import numpy as np

from modules.mixers.qllm import FIELDS
from qllm.loader import TFCAFLoadError, load_tfcaf, shipped_reference
from utils.paths import repo_relative


def resolve_tfcaf_path(args):
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
    """Fills `tfcaf_w`, `tfcaf_b` of episode batches from the TFCAF worker; resolves `args.igm_gate` and records
    the function's identity in `args.tfcaf_sha256` (the mixer's checkpoints carry it). `run_info` (the Sacred
    run's info dict) gets the function's record under "tfcaf" once the worker is up, and its final cost."""

    def __init__(self, args, log, process=None, run_info=None):
        path = resolve_tfcaf_path(args)
        self.spec = load_tfcaf(path, env_config=args.env_config, n_agents=args.n_agents,
                               state_size=int(args.state_shape), igm_gate=args.igm_gate, revalidate=revalidator(args),
                               log=log)
        gate = args.igm_gate
        if gate is None:
            gate = True if self.spec.igm_gate is None else self.spec.igm_gate
        args.igm_gate, args.tfcaf_sha256 = bool(gate), self.spec.sha256
        self.n_agents, self.log, self.run_info = args.n_agents, log, run_info
        self.worker = self.spec.start_worker(args.n_agents, bool(gate), timeout_s=float(args.tfcaf_timeout_s),
                                             memory_mb=int(args.tfcaf_memory_mb), process=process)
        self._record()

    @property
    def scheme(self):
        return {"tfcaf_w": {"vshape": (self.n_agents,)}, "tfcaf_b": {"vshape": (1,)}}

    def info(self):
        sandbox = self.worker.sandbox or {}
        return {"path": self.spec.path, "sha256": self.spec.sha256, "form": self.spec.form, "trust": self.spec.trust,
                "igm_gate": self.worker.igm_gate, "seccomp": sandbox.get("seccomp"),
                "worker_calls": self.worker.calls,
                "worker_ms_per_1000_states": round(self.worker.cost_per_1000_states_ms(), 3)}

    def _record(self):
        if self.run_info is not None:
            self.run_info["tfcaf"] = self.info()

    def annotate(self, batch, t_env=None):
        """Compute the fields for the filled time steps of every episode in `batch` (padding stays 0)."""
        if self.worker.sandbox is None:
            sandbox = self.worker.wait_ready()
            self.log.info(f"TFCAF {self.spec.path} (sha256 {self.spec.sha256[:16]}..., {self.spec.form} form, "
                          f"{self.spec.trust}, igm_gate={self.worker.igm_gate}) runs in a sandboxed worker (seccomp "
                          f"{'on' if sandbox.get('seccomp') else 'off: ' + str(sandbox.get('seccomp_reason'))})")
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


def make_features(args, log, process=None, run_info=None):
    """The providers of the batch fields this run's mixer declares ([] for mixers that declare none)."""
    return [TFCAFFeatures(args, log, process=process, run_info=run_info)] if wants_features(args) else []
