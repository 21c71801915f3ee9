"""Preprocess transforms applied when a field is written to an EpisodeBatch (pymarl semantics)."""
import numpy as np
import torch as th


class OneHot:
    def __init__(self, out_dim):
        self.out_dim = out_dim

    def transform(self, tensor):
        # tensor [..., 1] of action indices -> [..., out_dim]
        return th.nn.functional.one_hot(tensor.squeeze(-1).long(), self.out_dim).float()

    def transform_np(self, array):
        # the runners' per-step path: NumPy avoids building tensors for every step
        return np.eye(self.out_dim, dtype=np.float32)[array.squeeze(-1).astype(np.int64)]

    def infer_output_info(self, vshape_in, dtype_in):
        return (self.out_dim,), th.float32
