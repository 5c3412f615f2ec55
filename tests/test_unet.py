"""The UNet: shapes at several sizes, a clear error for bad sizes, parameter counts and cost of the presets."""
from __future__ import annotations

import pytest
import torch

from factory.diffusion.unet import PRESETS, UNet, count_parameters, timestep_embedding


@pytest.fixture(scope="module")
def tiny() -> UNet:
    torch.manual_seed(0)
    net = UNet(PRESETS["tiny"])
    with torch.no_grad():  # randomize the zero-initialized output layers so outputs carry signal
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


@pytest.mark.parametrize("hw", [(16, 16), (8, 8), (32, 32), (16, 24), (2, 2)])
def test_tiny_shapes(tiny, hw):
    x = torch.randn(3, 1, *hw)
    with torch.no_grad():
        out = tiny(x, torch.tensor([0.0, 10.0, 49.0]))
    assert out.shape == (3, 1, *hw) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_output_depends_on_timestep_and_input(tiny):
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        a, b = tiny(x, torch.tensor([1.0])), tiny(x, torch.tensor([40.0]))
        c = tiny(torch.randn(1, 1, 16, 16), torch.tensor([1.0]))
    assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


def test_batch_rows_are_independent(tiny):
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([1.0, 5.0, 20.0, 49.0])
    with torch.no_grad():
        batch = tiny(x, t)
        rows = torch.cat([tiny(x[i:i + 1], t[i:i + 1]) for i in range(4)])
    assert (batch - rows).abs().max() < 1e-5  # GroupNorm, not BatchNorm: no cross-sample mixing


@pytest.mark.parametrize("preset, hw, multiple", [("tiny", (15, 16), 2), ("small", (64, 60), 8), ("paper", (100, 96), 32)])
def test_size_not_a_multiple_is_a_clear_error(preset, hw, multiple):
    net = UNet(PRESETS[preset])
    assert net.config.size_multiple == multiple
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        net(torch.zeros(1, 1, *hw), torch.zeros(1))


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0.0, 1.0, 1999.0]), 32)
    assert emb.shape == (3, 32)
    assert torch.allclose(emb[0, :16], torch.ones(16)) and torch.allclose(emb[0, 16:], torch.zeros(16))


@pytest.mark.parametrize("preset, low, high", [
    ("tiny", 40e3, 60e3),  # 48,401
    ("small", 3.2e6, 3.5e6),  # 3,341,185
    ("paper", 8.5e6, 9.3e6),  # 8,913,793 (Saguy et al. / improved-diffusion at 256 px, base 64)
])
def test_parameter_counts(preset, low, high):
    assert low <= count_parameters(UNet(PRESETS[preset])) <= high
