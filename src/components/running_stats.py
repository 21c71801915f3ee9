"""Running mean/variance (parallel-variance update), for reward standardisation and value normalisation."""
import torch as th
from torch import nn


class RunningMeanStd(nn.Module):
    """A module so that its statistics are saved with the learner's state_dict and moved by .to()."""

    def __init__(self, shape=(), epsilon=1e-4):
        super().__init__()
        self.register_buffer("mean", th.zeros(shape))
        self.register_buffer("var", th.ones(shape))
        self.register_buffer("count", th.tensor(epsilon))

    @th.no_grad()
    def update(self, x, mask=None):
        x = x.reshape(-1, *self.mean.shape)
        if mask is not None:
            x = x[mask.reshape(-1).bool()]
        if x.shape[0] == 0:
            return
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * self.count * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x):
        return (x - self.mean) / th.sqrt(self.var + 1e-8)

    def denormalize(self, x):
        return x * th.sqrt(self.var + 1e-8) + self.mean
