"""CODI's shared-world projection of generated observations (ours; `project_views`, off by default).

The diffusion network models every agent's observation stream, and after CPU-sized training its cross-agent
attention is weak: agents' views of the shared things (landmarks, teammates) drift apart, so no single world explains
a generated joint observation (spread N = 3: view gap 0.28-0.38 world units, 0 in real data). An env that can say how
its views must agree gives a linear map M (`view_projection`, env units); sampling applies it, between denormalise
and normalise, to each denoising step's clean estimate (diffusion.SegmentDiffusion.sample's `project`).
"""
import numpy as np
import torch as th


class ViewProjection:
    """Normalised joint observations [..., n, O] (torch) -> the same with the env's projection M applied in env
    units (idempotent when M is: M @ M = M)."""

    def __init__(self, normaliser, M, device="cpu"):
        self.normaliser = normaliser
        self.M_t = th.as_tensor(np.asarray(M, dtype=np.float32).T.copy(), device=device)  # row vectors @ M^T

    def __call__(self, x):
        env = self.normaliser.denormalise(x)
        flat = env.reshape(*env.shape[:-2], -1) @ self.M_t.to(dtype=env.dtype)
        return self.normaliser.normalise(flat.reshape(env.shape))


def checked_projection(hooks, real_obs, fix):
    """The env's `view_projection()` M, checked against the dataset: shape [n*O, n*O], finite, and the identity on
    its real observations `real_obs [..., n, O]` (whole episodes, so that moving agents are seen too; real views
    agree, so a map that moves them does not fit this observation layout). `fix` ends every error message (what to
    set to go on without it)."""
    name = type(hooks).__name__
    if not callable(getattr(hooks, "view_projection", None)):
        raise ValueError(f"project_views needs the env hook view_projection, which {name} lacks; {fix}")
    try:
        M = np.asarray(hooks.view_projection(), dtype=np.float64)
    except NotImplementedError as e:
        raise ValueError(f"project_views needs the env hook view_projection, which {name} lacks ({e}); {fix}") from e
    o = np.asarray(real_obs, dtype=np.float64)
    size = o.shape[-2] * o.shape[-1]
    if M.shape != (size, size) or not np.isfinite(M).all():
        raise ValueError(f"{name}.view_projection() must be a finite [{size}, {size}] matrix (n_agents x obs), got "
                         f"shape {M.shape}; {fix}")
    flat = o.reshape(-1, size)
    moved = np.abs(flat @ M.T - flat).max() if len(flat) else 0.0
    if moved > 1e-4 * max(1.0, np.abs(flat).max()):
        raise ValueError(f"{name}.view_projection() moves the dataset's real observations (by up to {moved:.3g}): "
                         f"it does not fit this observation layout; {fix}")
    return M
