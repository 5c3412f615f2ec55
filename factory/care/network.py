"""The CARE network: a compact residual U-Net (Weigert et al. 2018, "Content-aware image restoration").

It maps the LR frame, brought to the HR grid and normalized (:mod:`factory.care.transform`), to
the HR image (normalized density): pred = x + UNet(x). ``depth`` 2x down/up levels with
``channels`` * 2**level feature maps, two 3x3 convolutions + ReLU per block, max pooling down,
transposed convolutions up, skip connections by concatenation. The HR side must be divisible
by 2**depth (inputs are padded to that). Moved here from ``jobs/train_care.py`` unchanged, so
checkpoints of the same config hold the same tensors.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from factory.errors import FactoryError


@dataclass(frozen=True)
class NetworkConfig:
    depth: int = 2  # U-Net levels below the top
    channels: int = 16  # feature maps at the top level, doubled per level

    def __post_init__(self) -> None:
        if not (1 <= self.depth <= 6 and 1 <= self.channels <= 512):
            raise FactoryError(f"CARE network depth must be 1-6 and channels 1-512, got {self.depth} and {self.channels}.")

    @property
    def multiple(self) -> int:
        """The HR side must be a multiple of this (one 2x pooling per level)."""
        return 2**self.depth

    def to_dict(self) -> dict:
        return asdict(self)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class CareUNet(nn.Module):
    """Residual U-Net: ``depth`` 2x down/up levels, ``channels`` * 2**level feature maps, 3x3 convs."""

    def __init__(self, depth: int = 2, channels: int = 16):
        super().__init__()
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip([1] + widths[:-2], widths[:-1]))
        self.bottom = conv_block(widths[-2], widths[-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        skips, h = [], x
        for block in self.down:
            h = block(h)  # (B, C_l, H / 2**l, W / 2**l)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)  # (B, C_depth, H / 2**depth, W / 2**depth)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            h = merge(torch.cat([up(h), skip], dim=1))  # (B, C_l, H / 2**l, W / 2**l)
        return x + self.head(h)  # residual: the network learns the correction to the input


def build(cfg: NetworkConfig) -> CareUNet:
    return CareUNet(cfg.depth, cfg.channels)


def receptive_radius(cfg: NetworkConfig) -> int:
    """An upper bound on the pixels from an output pixel to the farthest input pixel it depends on.

    At level l (scale 2**l px) each 3x3 convolution reaches 2**l px: two in the down block, two in the
    merge block; the 2x2 pooling below it adds 2**l, and the transposed convolution back up can shift
    by 2**l (output parity); the bottom block's two convolutions reach 2 * 2**depth. Summed:
    6 (2**depth - 1) + 2**(depth + 1) px (26 at depth 2; tests/test_care.py checks it against the
    gradient support of a network).
    """
    return 6 * (cfg.multiple - 1) + 2 * cfg.multiple
