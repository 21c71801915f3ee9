"""QLLM mixer (papers 002/004): Q_tot = sum_i g(w_i(s)) Q_i + b(s), with w and b from a training-free credit
assignment function (TFCAF) written by an LLM (`--config=qllm_generate`) or a shipped hand-written reference.

No learnable parameters and no untrusted code: the TFCAF runs in a sandboxed worker process when episodes
enter the replay buffer (qllm.features), which stores w(s), b(s) as the batch fields `tfcaf_w`, `tfcaf_b`;
the learner passes them here. Settings (resolved by qllm.features before the mixer is built):
- `tfcaf_path`: a TFCAF file with a signed validation record (else it is validated again at start-up);
  null -> the shipped reference for the run's env config (src/qllm/tfcafs/MANIFEST.json).
- `igm_gate`: true -> g = abs (Q_tot monotonic in every Q_i, IGM holds); false -> g = identity;
  null -> the setting recorded with the TFCAF, else true. A legacy `QLLMNetwork(agents_q, global_state)`
  is converted to this weight form in the sandbox (validation checks that it is linear in the Qs).

Unlike the original code, the output is not multiplied by n_agents: the TFCAF's weights set the scale.
Weight statistics of the last forward (masked to real transitions when the learner passes `mask`) are
available through `log_stats()`; q_learner logs them as mixer_w_mean, mixer_w_std, ... .
"""
import torch
import torch.nn as nn

FIELDS = ("tfcaf_w", "tfcaf_b")


class QLLMMixer(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n_agents = args.n_agents
        self.igm_gate = True if args.igm_gate is None else bool(args.igm_gate)
        # set on args by qllm.features when a run starts its TFCAF; a mixer built without one has no identity
        self.tfcaf_sha256 = getattr(args, "tfcaf_sha256", None)
        self._last = None  # (weights, bias, mask) of the last forward

    def forward(self, agent_qs, states, tfcaf_w=None, tfcaf_b=None, mask=None, **extra):
        if tfcaf_w is None or tfcaf_b is None:
            raise RuntimeError("the qllm mixer reads the batch fields tfcaf_w and tfcaf_b, which the run fills from "
                               "the sandboxed TFCAF worker when episodes enter the buffer (qllm.features); this batch "
                               "has none (a batch built outside run.setup?)")
        w = tfcaf_w.to(agent_qs.dtype)
        used = w.abs() if self.igm_gate else w
        self._last = (w.detach(), tfcaf_b.detach(), mask)  # statistics are computed only when logged
        return (used * agent_qs).sum(dim=-1, keepdim=True) + tfcaf_b.to(agent_qs.dtype)

    def log_stats(self):
        """Statistics of the raw weights and bias of the last forward, as floats."""
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
        return {"tfcaf_sha256": self.tfcaf_sha256, "igm_gate": self.igm_gate}

    def set_extra_state(self, state):
        if state and state.get("tfcaf_sha256") not in (None, self.tfcaf_sha256):
            raise ValueError(f"this checkpoint was trained with the TFCAF of SHA-256 {state['tfcaf_sha256']}, but "
                             f"this run uses SHA-256 {self.tfcaf_sha256}; resume with the same tfcaf_path")
