"""The ε-network of CODI's segment diffusion: a temporal U-Net over joint-observation segments, shared by all agents.

    x [B, H, n, O] (noisy normalised observations), k [B] (diffusion step), R [B] (scaled return-to-go),
    R_given [B] bool, z [B, n] (agent-quality labels), z_given [B, n] bool  ->  ε̂ [B, H, n, O]

Layout after MADiff's shared model: the agents are folded into the batch and go through one 1-D conv U-Net over time
(one set of weights); cross-agent attention with a zero-initialised gate mixes them at the bottleneck and on each
skip connection that the decoder reads. Each agent's stream is conditioned (FiLM in every residual block) on

    [emb(k); emb(R) or null_R; emb(z_i) or null_z]

so agent i sees its own label z_i, as MADiff gives each agent its own return. A masked condition uses a *learned*
null embedding (null_R, null_z), which differs from the embedding of R = 0 or z_i = 0: "unknown" is not "bad".
Without agent indices anywhere, permuting the agents (in x, z and z_given) permutes the output.

Any horizon H >= 1 works: each level halves the length rounding up (a stride-2 conv), and each upsampling doubles
and crops to the length of the skip it meets, so H = 8 goes 8 -> 4 -> 2 and H = 5 goes 5 -> 3 -> 2 and back,
without padding the segment.
"""
import torch
import torch.nn as nn

from modules.diffusion.blocks import AgentAttention, ConvBlock, Downsample, ResidualBlock, SinusoidalEmbedding, Upsample


class ConditionEmbedding(nn.Module):
    """(k [B], R [B], R_given [B], z [B, n], z_given [B, n]) -> cond [B, n, 3*dim], one row per agent stream."""

    def __init__(self, dim):
        super().__init__()
        self.step = nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, 4 * dim), nn.Mish(),
                                  nn.Linear(4 * dim, dim))
        self.ret = nn.Sequential(nn.Linear(1, dim), nn.Mish(), nn.Linear(dim, dim))
        self.label = nn.Sequential(nn.Linear(1, dim), nn.Mish(), nn.Linear(dim, dim))
        self.null_ret = nn.Parameter(torch.randn(dim))
        self.null_label = nn.Parameter(torch.randn(dim))

    def forward(self, k, R, R_given, z, z_given):
        n = z.shape[1]
        step = self.step(k)  # [B, dim]
        ret = torch.where(R_given[:, None], self.ret(R.float()[:, None]), self.null_ret)  # [B, dim]
        label = torch.where(z_given[..., None], self.label(z.float()[..., None]), self.null_label)  # [B, n, dim]
        shared = torch.cat([step, ret], dim=-1)[:, None, :].expand(-1, n, -1)
        return torch.cat([shared, label], dim=-1)


class TemporalUNet(nn.Module):
    """ε-network (see the module docstring for shapes). `dim` is the base width; level l has dim * dim_mults[l]
    channels (cpu preset e.g. dim 32, mults (1, 2): ~0.3 M parameters; paper/MADiff: dim 128, mults (1, 4, 8))."""

    def __init__(self, obs_dim, dim=32, dim_mults=(1, 2), kernel_size=5, attention=True, heads=4):
        super().__init__()
        if obs_dim < 1 or dim < 2 or not dim_mults:
            raise ValueError(f"TemporalUNet: need obs_dim >= 1, dim >= 2 and at least one dim_mult "
                             f"(got obs_dim={obs_dim}, dim={dim}, dim_mults={dim_mults})")
        self.obs_dim, self.dim, self.dim_mults = obs_dim, dim, tuple(dim_mults)
        widths = [dim * m for m in dim_mults]
        cond_dim = 3 * dim
        self.condition = ConditionEmbedding(dim)
        self.stem = nn.Conv1d(obs_dim, widths[0], 1)

        def attend(c):
            return AgentAttention(c, heads) if attention else None

        self.down = nn.ModuleList()
        c_prev = widths[0]
        for level, c in enumerate(widths):
            last = level == len(widths) - 1
            self.down.append(nn.ModuleList([
                ResidualBlock(c_prev, c, cond_dim, kernel_size), ResidualBlock(c, c, cond_dim, kernel_size),
                # the level-0 skip is not read by the decoder (MADiff/Diffuser layout), so it needs no attention
                attend(c) if level > 0 else None,
                None if last else Downsample(c)]))
            c_prev = c
        self.mid1 = ResidualBlock(widths[-1], widths[-1], cond_dim, kernel_size)
        self.mid_attention = attend(widths[-1])
        self.mid2 = ResidualBlock(widths[-1], widths[-1], cond_dim, kernel_size)
        self.up = nn.ModuleList()
        for level in range(len(widths) - 1, 0, -1):
            c, c_out = widths[level], widths[level - 1]
            self.up.append(nn.ModuleList([
                ResidualBlock(2 * c, c_out, cond_dim, kernel_size), ResidualBlock(c_out, c_out, cond_dim, kernel_size),
                Upsample(c_out)]))
        self.head = nn.Sequential(ConvBlock(widths[0], widths[0], kernel_size), nn.Conv1d(widths[0], obs_dim, 1))

    def forward(self, x, k, R, R_given, z, z_given):
        B, H, n, O = x.shape
        if O != self.obs_dim or z.shape != (B, n) or z_given.shape != (B, n):
            raise ValueError(f"TemporalUNet: x must be [B, H, n, {self.obs_dim}] and z, z_given [B, n]; got x "
                             f"{tuple(x.shape)}, z {tuple(z.shape)}, z_given {tuple(z_given.shape)}")
        cond = self.condition(k, R, R_given, z, z_given).reshape(B * n, -1)
        h = self.stem(x.permute(0, 2, 3, 1).reshape(B * n, O, H))
        skips, lengths = [], []
        for res1, res2, attention, downsample in self.down:
            h = res2(res1(h, cond), cond)
            skips.append(h if attention is None else attention(h, n))
            lengths.append(h.shape[-1])
            if downsample is not None:
                h = downsample(h)
        h = self.mid1(h, cond)
        if self.mid_attention is not None:
            h = self.mid_attention(h, n)
        h = self.mid2(h, cond)
        for j, (res1, res2, upsample) in enumerate(self.up):
            level = len(self.down) - 1 - j
            h = res2(res1(torch.cat([h, skips[level]], dim=1), cond), cond)
            h = upsample(h, lengths[level - 1])
        out = self.head(h)  # [B*n, O, H]
        return out.reshape(B, n, O, H).permute(0, 3, 1, 2)
