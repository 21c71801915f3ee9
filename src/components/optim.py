"""Adam and RMSprop written with torch's foreach ops.

Why not torch.optim: on this torch version every torch.optim optimizer imports torch._dynamo
on first use (add_param_group and step are wrapped for torch.compile), which costs 1.2-1.5 s at
start-up, a fifth of a short benchmark run, and we never compile. The update rules are the
textbook ones (Kingma & Ba 2015; Tieleman & Hinton 2012, as torch.optim.RMSprop computes it);
tests check them against torch.optim step by step.
"""
import math

import torch as th


class _Foreach:
    def __init__(self, params, lr):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.steps = 0

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @th.no_grad()
    def step(self):
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if idx:
            self.steps += 1
            params = [self.params[i] for i in idx]
            self._update(params, [p.grad for p in params], idx)

    def state_dict(self):
        return {"steps": self.steps, "lr": self.lr, **{k: [t.clone() for t in v] for k, v in self._buffers().items()}}

    def load_state_dict(self, state):
        self.steps, self.lr = state["steps"], state["lr"]
        for k, buffers in self._buffers().items():
            if len(state[k]) != len(buffers):
                raise ValueError(f"optimizer state has {len(state[k])} '{k}' tensors, expected {len(buffers)}")
            for dst, src in zip(buffers, state[k]):
                dst.copy_(src)

    def to(self, device):
        for k, buffers in self._buffers().items():
            setattr(self, k, [t.to(device) for t in buffers])
        return self


class Adam(_Foreach):
    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.exp_avg = [th.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [th.zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def _update(self, params, grads, idx):
        m = [self.exp_avg[i] for i in idx]
        v = [self.exp_avg_sq[i] for i in idx]
        th._foreach_lerp_(m, grads, 1 - self.beta1)
        th._foreach_mul_(v, self.beta2)
        th._foreach_addcmul_(v, grads, grads, value=1 - self.beta2)
        bias1 = 1 - self.beta1**self.steps
        bias2_sqrt = math.sqrt(1 - self.beta2**self.steps)
        denom = th._foreach_sqrt(v)
        th._foreach_div_(denom, bias2_sqrt)
        th._foreach_add_(denom, self.eps)
        th._foreach_addcdiv_(params, m, denom, value=-self.lr / bias1)


class RMSprop(_Foreach):
    """pymarl's original optimiser (optim_alpha, optim_eps)."""

    def __init__(self, params, lr, alpha=0.99, eps=1e-8):
        super().__init__(params, lr)
        self.alpha, self.eps = alpha, eps
        self.square_avg = [th.zeros_like(p) for p in self.params]

    def _buffers(self):
        return {"square_avg": self.square_avg}

    def _update(self, params, grads, idx):
        sq = [self.square_avg[i] for i in idx]
        th._foreach_mul_(sq, self.alpha)
        th._foreach_addcmul_(sq, grads, grads, value=1 - self.alpha)
        denom = th._foreach_sqrt(sq)
        th._foreach_add_(denom, self.eps)
        th._foreach_addcdiv_(params, grads, denom, value=-self.lr)
