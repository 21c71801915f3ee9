"""Per-dimension normalisation of observations to [-1, 1], fitted on a dataset's valid steps (CODI / MADiff).

The diffusion model works in this space, and the dynamics consistency check measures its error here, so an
error threshold means the same on every env. A dimension that never changes in the data (MPE's comm channels,
one-hot ids) is *constant*: it normalises to 0, is never generated, and denormalises back to its value.
"""
import json

import numpy as np


class ObsNormaliser:
    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float32)  # [n, O] (or [O]): per agent and dimension
        self.high = np.asarray(high, dtype=np.float32)
        self.constant = (self.high - self.low) <= 1e-8
        self.scale = np.where(self.constant, 1.0, (self.high - self.low) / 2.0).astype(np.float32)
        self.centre = ((self.high + self.low) / 2.0).astype(np.float32)

    @classmethod
    def fit(cls, obs, valid, per_agent=False):
        """From `obs [..., n, O]` where `valid [...]` (the batch dims of obs) is true. per_agent=False pools the
        agents (one range per dimension, shared: the network is shared across agents)."""
        obs = np.asarray(obs, dtype=np.float32)
        rows = obs[np.asarray(valid, dtype=bool)]  # [M, n, O]
        if len(rows) == 0:
            raise ValueError("ObsNormaliser.fit: no valid observations")
        if per_agent:
            low, high = rows.min(axis=0), rows.max(axis=0)
        else:
            low = np.broadcast_to(rows.min(axis=(0, 1)), rows.shape[1:]).copy()
            high = np.broadcast_to(rows.max(axis=(0, 1)), rows.shape[1:]).copy()
        return cls(low, high)

    def normalise(self, x):
        """x [..., n, O] (numpy or torch) -> [-1, 1]; constant dimensions -> 0."""
        centre, scale = self._like(x)
        return (x - centre) / scale * self._gen_mask(x)

    def denormalise(self, y):
        """Back to the env's units; constant dimensions take their (only) value whatever y holds there."""
        centre, scale = self._like(y)
        return y * scale * self._gen_mask(y) + centre

    @property
    def generated(self):
        """[n, O] bool: the dimensions a generator must produce (not constant)."""
        return ~self.constant

    def _gen_mask(self, x):
        m = self.generated.astype(np.float32)
        return self._cast(m, x)

    def _like(self, x):
        return self._cast(self.centre, x), self._cast(self.scale, x)

    @staticmethod
    def _cast(a, x):
        if isinstance(x, np.ndarray):
            return a
        import torch as th
        return th.as_tensor(a, dtype=x.dtype, device=x.device)

    def state_dict(self):
        return {"low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_state_dict(cls, d):
        return cls(np.asarray(d["low"], np.float32), np.asarray(d["high"], np.float32))

    def to_json(self):
        return json.dumps(self.state_dict())
