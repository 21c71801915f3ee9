"""TemporalUNet (modules/diffusion): shapes for any horizon, agent permutation equivariance, the zero-initialised
attention gate, and the learned null embeddings."""
import pytest
import torch

from modules.diffusion import TemporalUNet
from modules.diffusion.blocks import AgentAttention


def _inputs(B=3, H=8, n=3, O=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(B, H, n, O, generator=g), k=torch.randint(0, 50, (B,), generator=g),
                R=torch.randn(B, generator=g), R_given=torch.tensor([True, False, True])[:B],
                z=torch.rand(B, n, generator=g), z_given=torch.rand(B, n, generator=g) > 0.4)


def _open_gates(net, value=0.7):
    for m in net.modules():
        if isinstance(m, AgentAttention):
            m.gate.data.fill_(value)


@pytest.mark.parametrize("H", [1, 2, 3, 5, 7, 8, 24])
def test_output_shape_for_any_horizon(H):
    net = TemporalUNet(obs_dim=4, dim=8, dim_mults=(1, 2, 4))
    inp = _inputs(H=H)
    assert net(**inp).shape == inp["x"].shape


def test_permuting_agents_permutes_the_output():
    torch.manual_seed(0)
    net = TemporalUNet(obs_dim=4, dim=8, dim_mults=(1, 2))
    _open_gates(net)  # with closed gates equivariance would hold trivially
    inp = _inputs()
    perm = torch.tensor([2, 0, 1])
    permuted = dict(inp, x=inp["x"][:, :, perm], z=inp["z"][:, perm], z_given=inp["z_given"][:, perm])
    torch.testing.assert_close(net(**permuted), net(**inp)[:, :, perm], rtol=1e-5, atol=1e-5)


def test_attention_starts_closed_and_mixes_agents_once_opened():
    torch.manual_seed(0)
    net = TemporalUNet(obs_dim=4, dim=8, dim_mults=(1, 2))
    inp = _inputs()
    other = dict(inp, x=inp["x"].clone())
    other["x"][:, :, 1:] += 1.0  # change agents 1 and 2 only
    # gate 0 at init: agent 0's output ignores its teammates
    torch.testing.assert_close(net(**other)[:, :, 0], net(**inp)[:, :, 0])
    _open_gates(net)
    assert not torch.allclose(net(**other)[:, :, 0], net(**inp)[:, :, 0], atol=1e-4)


def test_masked_condition_is_not_the_zero_condition():
    torch.manual_seed(0)
    net = TemporalUNet(obs_dim=4, dim=8, dim_mults=(1, 2))
    inp = _inputs()
    zero = dict(inp, z=torch.zeros_like(inp["z"]), z_given=torch.ones_like(inp["z_given"]),
                R=torch.zeros_like(inp["R"]), R_given=torch.ones_like(inp["R_given"]))
    masked = dict(zero, z_given=torch.zeros_like(inp["z_given"]), R_given=torch.zeros_like(inp["R_given"]))
    assert not torch.allclose(net(**zero), net(**masked), atol=1e-4)
    # a masked value is ignored whatever it holds
    torch.testing.assert_close(net(**dict(masked, z=torch.rand_like(inp["z"]), R=torch.randn_like(inp["R"]))),
                               net(**masked))


def test_bad_shapes_name_the_expected_layout():
    net = TemporalUNet(obs_dim=4, dim=8)
    inp = _inputs()
    with pytest.raises(ValueError, match=r"x must be \[B, H, n, 4\]"):
        net(**dict(inp, x=inp["x"][..., :3]))
