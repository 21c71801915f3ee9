import pytest
import torch as th

from components.optim import Adam, RMSprop


def make_params(seed):
    g = th.Generator().manual_seed(seed)
    return [th.nn.Parameter(th.randn(4, 3, generator=g)), th.nn.Parameter(th.randn(3, generator=g))]


def loss_fn(params, step):
    w, b = params
    x = th.linspace(-1, 1, 12).view(4, 3) * (step + 1)
    return ((x * w).sum(0) + b).pow(2).sum() + w.abs().sum()


@pytest.mark.parametrize("ours,theirs", [
    (lambda p: Adam(p, lr=0.01), lambda p: th.optim.Adam(p, lr=0.01)),
    (lambda p: RMSprop(p, lr=0.01, alpha=0.99, eps=1e-5), lambda p: th.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-5)),
])
def test_matches_torch_optim_step_by_step(ours, theirs):
    a, b = make_params(0), make_params(0)
    opt_a, opt_b = ours(a), theirs(b)
    for step in range(25):
        for params, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_fn(params, step).backward()
            opt.step()
        for pa, pb in zip(a, b):
            th.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_state_round_trip_continues_identically():
    a = make_params(1)
    opt = Adam(a, lr=0.05)
    for step in range(5):
        opt.zero_grad()
        loss_fn(a, step).backward()
        opt.step()
    b = [th.nn.Parameter(p.detach().clone()) for p in a]
    opt_b = Adam(b, lr=0.05)
    opt_b.load_state_dict(opt.state_dict())
    for params, o in ((a, opt), (b, opt_b)):
        o.zero_grad()
        loss_fn(params, 5).backward()
        o.step()
    for pa, pb in zip(a, b):
        assert th.equal(pa, pb)


def test_load_rejects_state_of_another_model():
    opt = Adam(make_params(0), lr=0.1)
    with pytest.raises(ValueError, match="expected 2"):
        opt.load_state_dict(Adam(make_params(0)[:1], lr=0.1).state_dict())
