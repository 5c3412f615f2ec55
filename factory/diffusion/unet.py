"""The epsilon-predicting UNet (improved-diffusion, as adapted by Saguy et al. 2023).

One grey channel in, one out. Residual blocks take the timestep through a
scale-shift GroupNorm; self-attention runs on feature maps whose side is in
``attention_resolutions`` (measured at the training ``image_size``; the network is
fully convolutional, so any side divisible by 2**(levels-1) can be sampled).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from factory.errors import FactoryError

MAX_PARAMETERS = 200_000_000  # 0.8 GB of float32 weights: 22x the "paper" preset (8.9 M)


@dataclass(frozen=True)
class UNetConfig:
    image_size: int  # training patch side, px
    base_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]  # feature-map sides (px at image_size) with attention
    num_heads: int = 4
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(image_size=int(d["image_size"]), base_channels=int(d["base_channels"]),
                   channel_mult=tuple(int(m) for m in d["channel_mult"]),
                   num_res_blocks=int(d["num_res_blocks"]),
                   attention_resolutions=tuple(int(r) for r in d["attention_resolutions"]),
                   num_heads=int(d["num_heads"]), dropout=float(d["dropout"]))

    def check(self, in_channels: int = 1) -> None:
        """FactoryError (one sentence) unless every field is sane and the network has at most
        ``MAX_PARAMETERS`` weights, counted without allocating any (torch's ``meta`` device).

        A crafted checkpoint (``base_channels=1e7``) is refused here instead of failing
        in an allocation of terabytes.
        """
        ints = {"image_size": (self.image_size, 1, 8192), "base_channels": (self.base_channels, 1, 4096),
                "num_res_blocks": (self.num_res_blocks, 1, 16), "num_heads": (self.num_heads, 1, 64),
                "levels": (len(self.channel_mult), 1, 10)}
        ints.update({f"channel_mult[{i}]": (m, 1, 64) for i, m in enumerate(self.channel_mult)})
        for name, (value, lo, hi) in ints.items():
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise FactoryError(f"the UNet config's {name} must be an integer in {lo}..{hi}, got {value!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise FactoryError(f"the UNet config's dropout must be in [0, 1), got {self.dropout}.")
        if self.base_channels % 2:
            raise FactoryError(f"the UNet config's base_channels must be even (sin/cos embedding halves), got {self.base_channels}.")
        if any(self.base_channels * m % self.num_heads for m in self.channel_mult):
            raise FactoryError(f"the UNet config's num_heads={self.num_heads} does not divide every level's channels.")
        with torch.device("meta"):
            n = count_parameters(UNet(self, in_channels))
        if n > MAX_PARAMETERS:
            raise FactoryError(f"the UNet config describes {n:,} parameters, more than the {MAX_PARAMETERS:,} this factory loads.")

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per level)."""
        return 2 ** (len(self.channel_mult) - 1)


PRESETS: dict[str, UNetConfig] = {
    # Saguy et al. 2023 / improved-diffusion at 256x256: 8 M parameters.
    "paper": UNetConfig(image_size=256, base_channels=64, channel_mult=(1, 1, 2, 2, 2, 2),
                        num_res_blocks=1, attention_resolutions=(16, 8), dropout=0.0),
    # Trains and samples on a 2-core CPU: 64x64 patches, 4 levels (64, 32, 16, 8).
    "small": UNetConfig(image_size=64, base_channels=32, channel_mult=(1, 2, 2, 4),
                        num_res_blocks=1, attention_resolutions=(16, 8), dropout=0.0),
    # For tests only: a few thousand parameters.
    "tiny": UNetConfig(image_size=16, base_channels=8, channel_mult=(1, 2),
                       num_res_blocks=1, attention_resolutions=(8,), num_heads=1),
}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _silu(h: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is recorded (inference: saves an allocation and a pass per call)."""
    return F.silu(h, inplace=not torch.is_grad_enabled())


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, ch_in: int, ch_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(ch_in), nn.SiLU(), nn.Conv2d(ch_in, ch_out, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * ch_out))
        self.out_norm = _norm(ch_out)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(ch_out, ch_out, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if ch_in == ch_out else nn.Conv2d(ch_in, ch_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm, _, conv = self.in_layers
        h = conv(_silu(norm(x)))  # (B, C, H, W)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = torch.addcmul(shift, self.out_norm(h), 1 + scale)  # norm(h) * (1 + scale) + shift, one pass
        _, dropout, conv = self.out_layers
        return self.skip(x) + conv(dropout(_silu(h)))


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class UNet(nn.Module):
    """eps_theta(x_t, t): (B, in_channels, H, W), (B,) -> (B, 1, H, W).

    ``in_channels`` is 1 for the unconditional DDPM; a conditional model stacks its
    condition behind x_t (:class:`factory.diffusion.conditional.ConditionalUNet`: 2).
    """

    def __init__(self, config: UNetConfig, in_channels: int = 1):
        super().__init__()
        self.config = config
        c0 = config.base_channels
        emb_dim = 4 * c0
        self.time_embed = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_conv = nn.Conv2d(in_channels, c0, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch, side = [c0], c0, config.image_size
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                self.down.append(self._stage(ch, c0 * mult, emb_dim, side))
                ch = c0 * mult
                skips.append(ch)
            if level != len(config.channel_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                side //= 2

        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout),
                                     AttentionBlock(ch, config.num_heads),
                                     ResBlock(ch, ch, emb_dim, config.dropout)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                self.up.append(self._stage(ch + skips.pop(), c0 * mult, emb_dim, side))
                ch = c0 * mult
                if level and i == config.num_res_blocks:
                    self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                 nn.Conv2d(ch, ch, 3, padding=1)))
                    side *= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _stage(self, ch_in: int, ch_out: int, emb_dim: int, side: int) -> nn.ModuleList:
        blocks = [ResBlock(ch_in, ch_out, emb_dim, self.config.dropout)]
        if side in self.config.attention_resolutions:
            blocks.append(AttentionBlock(ch_out, self.config.num_heads))
        return nn.ModuleList(blocks)

    @staticmethod
    def _run(stage: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(stage, nn.ModuleList):
            for block in stage:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            return h
        return stage(h)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m = self.config.size_multiple
        if x.shape[-1] % m or x.shape[-2] % m:
            raise ValueError(f"image sides must be multiples of {m}, got {tuple(x.shape[-2:])}")
        emb = self.time_embed(timestep_embedding(t, self.config.base_channels))  # (B, 4*c0)
        h = self.input_conv(x)  # (B, c0, H, W)
        hs = [h]
        for stage in self.down:
            h = self._run(stage, h, emb)
            hs.append(h)
        for block in self.middle:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        for stage in self.up:
            if isinstance(stage, nn.ModuleList):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(stage, h, emb)
        norm, _, conv = self.out
        return conv(_silu(norm(h)))  # (B, 1, H, W)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
