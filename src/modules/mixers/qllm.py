"""QLLM mixer (papers 002/004): Q_tot = sum_i g(w_i(s)) Q_i + b(s), with w and b from a training-free credit
assignment function (TFCAF) written by an LLM (`--config=qllm_generate`) or a shipped hand-written reference.

No learnable parameters. Settings:
- `tfcaf_path`: a validated TFCAF file (its SHA-256 must match its meta.json); null -> the shipped
  reference for the run's env config (`env_config`, set by utils.config.build_config) from
  src/qllm/tfcafs/MANIFEST.json.
- `igm_gate`: true -> g = abs (Q_tot monotonic in every Q_i, IGM holds; validation already requires
  non-negative weights under the gate, abs guarantees it); false -> g = identity;
  null -> the setting recorded with the TFCAF (meta.json / MANIFEST), else true. A legacy
  `QLLMNetwork(agents_q, global_state)` computes Q_tot itself and cannot be gated; validation checked
  its monotonicity when it was validated with the gate on.

Unlike the original code, the output is not multiplied by n_agents: the TFCAF's weights set the scale.
Weight statistics of the last forward (masked to real transitions when the learner passes `mask`) are
available through `log_stats()`; q_learner logs them as mixer_w_mean, mixer_w_std, ... .
"""
import os

import torch
import torch.nn as nn

from qllm.loader import TFCAFLoadError, load_tfcaf, shipped_reference

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def resolve_tfcaf_path(args):
    path = getattr(args, "tfcaf_path", None)
    if path:
        path = os.path.expanduser(str(path))
        if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
            path = os.path.join(REPO_ROOT, path)  # relative to the repository, like results paths
        return path
    env_config = getattr(args, "env_config", None) or _env_config_from_args(args)
    return shipped_reference(env_config)


def _env_config_from_args(args):
    """Fallback when `env_config` is not in args: the one config in config/envs with the same env and label."""
    from run.setup import env_label
    from utils.config import available, load_yaml

    want = {"env": getattr(args, "env", None), "env_args": dict(getattr(args, "env_args", {}) or {})}
    matches = []
    for name in available("envs"):
        cfg = load_yaml("envs", name)
        if cfg.get("env") == want["env"] and env_label(cfg) == env_label(want):
            matches.append(name)
    if len(matches) != 1:
        raise TFCAFLoadError(f"cannot tell which env config this run uses (env '{want['env']}', candidates "
                             f"{matches or 'none'}); set tfcaf_path=<file>")
    return matches[0]


class QLLMMixer(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.tfcaf = load_tfcaf(resolve_tfcaf_path(args), verify_hash=True, n_agents=args.n_agents)
        gate = getattr(args, "igm_gate", None)
        if gate is None:
            gate = True if self.tfcaf.igm_gate is None else self.tfcaf.igm_gate
        self.igm_gate = bool(gate)
        self._last = None  # (weights, bias, mask) of the last forward

    def forward(self, agent_qs, states, mask=None, **extra):
        q_tot, w, b = self.tfcaf.q_tot(agent_qs, states, igm_gate=self.igm_gate)
        if w is not None:
            self._last = (w.detach(), b.detach(), mask)  # statistics are computed only when logged
        return q_tot

    def log_stats(self):
        """Statistics of the raw weights and bias of the last forward, as floats (empty for the legacy form)."""
        if self._last is None:
            return {}
        w, b, mask = self._last
        if mask is not None and mask.shape[:-1] == w.shape[:-1]:
            keep = mask.reshape(-1) > 0
            w, b = w.reshape(-1, w.shape[-1])[keep], b.reshape(-1, 1)[keep]
        w, b = w.reshape(-1, w.shape[-1]).float(), b.reshape(-1).float()
        if w.numel() == 0:
            return {}
        std = w.std() if w.numel() > 1 else w.new_zeros(())
        stats = torch.stack([w.mean(), std, w.min(), w.max(), (w < 0).float().mean(), b.mean()]).tolist()
        return dict(zip(("w_mean", "w_std", "w_min", "w_max", "w_neg_frac", "b_mean"), stats))

    # the TFCAF's identity travels with checkpoints: resuming with another function is refused
    def get_extra_state(self):
        return {"tfcaf_sha256": self.tfcaf.sha256, "igm_gate": self.igm_gate}

    def set_extra_state(self, state):
        if state and state.get("tfcaf_sha256") not in (None, self.tfcaf.sha256):
            raise TFCAFLoadError(f"this checkpoint was trained with the TFCAF of SHA-256 {state['tfcaf_sha256']}, "
                                 f"but this run loaded {self.tfcaf.path} with SHA-256 {self.tfcaf.sha256}; "
                                 f"resume with the same tfcaf_path")
