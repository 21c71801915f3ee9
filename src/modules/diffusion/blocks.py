"""Building blocks of the temporal U-Net (modules/diffusion/unet.py).

Inside the U-Net the agents are folded into the batch: a feature map is `h [B*n, C, T]` (channels first, time
last, as Conv1d wants), and a condition is `cond [B*n, E]`. Only the cross-agent attention unfolds the agents.
"""
import math

import torch
import torch.nn as nn


def group_count(channels, most=8):
    """The largest number of GroupNorm groups <= `most` that divides `channels`."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class SinusoidalEmbedding(nn.Module):
    """k [N] (integer or float diffusion steps) -> [N, dim]: sin/cos features at geometric frequencies."""

    def __init__(self, dim):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding: dim must be an even number >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k):
        angles = k.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish: [N, C_in, T] -> [N, C_out, T]."""

    def __init__(self, c_in, c_out, kernel_size=5):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(group_count(c_out), c_out)
        self.act = nn.Mish()

    def forward(self, h):
        return self.act(self.norm(self.conv(h)))


class ResidualBlock(nn.Module):
    """Two ConvBlocks with FiLM conditioning between them, plus a residual path.

    h [N, C_in, T], cond [N, E] -> [N, C_out, T]. FiLM: the first block's output is scaled by (1 + s) and shifted
    by b, with (s, b) = Linear(Mish(cond)); the scale starts near 1 so the block starts as a plain conv block.
    """

    def __init__(self, c_in, c_out, cond_dim, kernel_size=5):
        super().__init__()
        self.block1 = ConvBlock(c_in, c_out, kernel_size)
        self.block2 = ConvBlock(c_out, c_out, kernel_size)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, cond):
        scale, shift = self.film(cond)[..., None].chunk(2, dim=1)  # each [N, C_out, 1]
        out = self.block1(h) * (1 + scale) + shift
        return self.block2(out) + self.residual(h)


class AgentAttention(nn.Module):
    """Self-attention across agents, one token per agent (MADiff's layout): h [B*n, C, T] -> [B*n, C, T].

    A token is an agent's whole feature map (channels x time, flattened); the softmax runs over the n agents of
    the same segment. No agent index enters, so permuting the agents permutes the output (the network stays
    permutation-equivariant). The output is h + gate * attention(h) with the gate initialised to 0: the network
    starts as independent per-agent U-Nets and learns how much to mix.
    """

    def __init__(self, channels, heads=4):
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.head_dim = channels // self.heads
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, h, n_agents):
        N, C, T = h.shape
        B = N // n_agents
        q, k, v = self.qkv(h).chunk(3, dim=1)  # each [B*n, C, T]

        def tokens(t):  # [B*n, C, T] -> [B, heads, n, head_dim*T]
            return t.reshape(B, n_agents, self.heads, self.head_dim * T).transpose(1, 2)

        attn = torch.softmax(tokens(q) @ tokens(k).transpose(-1, -2) / math.sqrt(self.head_dim * T), dim=-1)
        mixed = (attn @ tokens(v)).transpose(1, 2).reshape(N, C, T)
        return h + self.gate * self.out(mixed)


class Downsample(nn.Module):
    """Strided conv: [N, C, T] -> [N, C, ceil(T/2)] (any T >= 1)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h):
        return self.conv(h)


class Upsample(nn.Module):
    """Transposed conv: [N, C, T] -> [N, C, length] with length in {2T-1, 2T}: doubles, then crops to the length
    of the skip connection it meets, which undoes Downsample for odd lengths too."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)

    def forward(self, h, length):
        return self.conv(h)[..., :length]
