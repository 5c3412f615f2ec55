"""How good and how novel are generated images? Measures that need no downloaded network.

Memorization (Saguy et al. 2023, "This microtubule does not exist", who report a
max NCC of 0.345 / mean 0.336 between generated and training microtubule images,
and 0.372 between independent experimental images): for each generated image, the
maximum normalized cross-correlation (NCC, Pearson correlation of pixel values)
with any training image, under the 8 flips/rotations of the generated image.

- :func:`max_ncc` compares same-size patches: NCC = cosine of mean-subtracted,
  unit-norm vectors, one batched matrix product per reference chunk. It only sees
  the shifts present in the reference patches (their extraction stride).
- :func:`max_ncc_sliding` compares against every shift inside whole training
  images (FFT cross-correlation with integral-image window norms, Lewis 1995,
  "Fast normalized cross-correlation"), so a copy is found wherever it sits.

Fidelity, between generated and held-out real patches on the same intensity scale
(e.g. both [0, 1] normalized density):

- :func:`power_spectrum_distance`: mean |log10| ratio of radially averaged power
  spectra (texture and sharpness; 0.30 = a factor 2 in power at every frequency).
- :func:`histogram_distance`: Wasserstein-1 distance of pixel values (intensity units).
- :func:`bright_fraction`: fraction of pixels above a threshold (how much of the field
  is filament; compare generated vs real).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from factory.images import dihedral8


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32 rows with zero mean and unit L2 norm; constant rows become 0."""
    rows = x.reshape(len(x), -1).astype(np.float64)
    rows -= rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 1e-12).astype(np.float32)


def max_ncc(generated: np.ndarray, reference: np.ndarray, chunk: int = 4096, dihedral: bool = True) -> np.ndarray:
    """Max NCC of each generated image against same-size reference patches: (N, S, S), (M, S, S) -> (N,).

    With ``dihedral`` the 8 flips/rotations of each generated image are tried (pass
    False when the reference already holds all 8, as ``train.prepare_data`` patches
    do). Memory: one (``chunk``, S*S) reference block and one (8N, ``chunk``) score
    block at a time. Constant images score 0.
    """
    if generated.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"generated {generated.shape[-2:]} and reference {reference.shape[-2:]} patches differ in size")
    views = dihedral8(generated) if dihedral else generated[None]  # (V, N, S, S)
    g = unit_rows(views.reshape(-1, *generated.shape[-2:]))  # (V*N, S*S)
    best = np.full(len(g), -1.0, np.float32)
    for start in range(0, len(reference), chunk):
        r = unit_rows(reference[start:start + chunk])  # (c, S*S)
        np.maximum(best, (g @ r.T).max(axis=1), out=best)  # (V*N,)
    return best.reshape(len(views), len(generated)).max(axis=0)  # (N,)


def _window_sums(x: np.ndarray, s: int) -> np.ndarray:
    """Sum over every s x s window of a 2-D array: (H, W) -> (H-s+1, W-s+1), via an integral image."""
    c = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]


def max_ncc_sliding(generated: np.ndarray, images: Sequence[np.ndarray], dihedral: bool = True,
                    min_std: float = 1e-3, chunk: int = 32) -> np.ndarray:
    """Max NCC of each generated (N, S, S) image over every S x S window of each 2-D reference image: -> (N,).

    NCC(u) = sum_x t(x) f(u + x) / ||f_u - mean(f_u)|| with t the zero-mean, unit-norm
    template; the numerator is one FFT cross-correlation per template (no wrap-around:
    only windows fully inside the image are kept), the denominator comes from integral
    images of f and f^2, all in float64. Windows whose pixel std is below ``min_std`` (image
    units; flat background) score 0. ``chunk`` templates are transformed at a time.
    """
    S = generated.shape[-1]
    views = dihedral8(generated) if dihedral else generated[None]  # (V, N, S, S)
    t = unit_rows(views.reshape(-1, S, S)).reshape(-1, S, S).astype(np.float64)  # (V*N, S, S)
    best = np.full(len(t), -1.0, np.float32)
    for img in images:
        f = np.asarray(img, np.float64)
        H, W = f.shape
        if H < S or W < S:
            raise ValueError(f"reference image {f.shape} is smaller than the {S}x{S} generated images")
        s1, s2 = _window_sums(f, S), _window_sums(f * f, S)  # (H-S+1, W-S+1)
        var_sum = np.maximum(s2 - s1 * s1 / (S * S), 0.0)  # sum over the window of (f - mean)^2
        ok = var_sum > (min_std**2) * S * S
        denom = np.where(ok, np.sqrt(var_sum), 1.0)
        F = np.fft.rfft2(f - f.mean())  # (H, W//2+1); the offset cancels against the zero-mean template
        for start in range(0, len(t), chunk):
            T_ = np.fft.rfft2(t[start:start + chunk], s=(H, W))  # (c, H, W//2+1)
            corr = np.fft.irfft2(F[None] * np.conj(T_), s=(H, W))[:, : H - S + 1, : W - S + 1]  # (c, H-S+1, W-S+1)
            ncc = np.where(ok, corr / denom, 0.0)
            np.maximum(best[start:start + chunk], ncc.reshape(len(ncc), -1).max(axis=1), out=best[start:start + chunk])
    return best.reshape(len(views), len(generated)).max(axis=0)  # (N,)


def radial_power_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean radially averaged power spectrum of (N, S, S) images -> (S//2,) for |k| = 1..S//2 cycles per image.

    Each image has its mean removed; power is |FFT|^2 / S^2 (per-pixel variance units),
    averaged over images and over annuli of width one cycle per image side.
    """
    S = images.shape[-1]
    x = images.astype(np.float64) - images.mean(axis=(-2, -1), keepdims=True)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0) / (S * S)  # (S, S)
    k = np.fft.fftfreq(S) * S
    radius = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)  # (S, S) cycles per image
    sums = np.bincount(radius.ravel(), power.ravel(), minlength=S)
    counts = np.bincount(radius.ravel(), minlength=S)
    return (sums[1: S // 2 + 1] / counts[1: S // 2 + 1]).astype(np.float64)


def power_spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frequencies 1..S/2 of |log10 P_a(k) - log10 P_b(k)| (decades) for (N, S, S) image sets."""
    if a.shape[-2:] != b.shape[-2:] or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"need square images of one size, got {a.shape[-2:]} and {b.shape[-2:]}")
    pa, pb = radial_power_spectrum(a), radial_power_spectrum(b)
    tiny = 1e-20
    return float(np.mean(np.abs(np.log10(pa + tiny) - np.log10(pb + tiny))))


def histogram_distance(a: np.ndarray, b: np.ndarray, quantiles: int = 2001) -> float:
    """Wasserstein-1 distance between the pixel-value distributions of two image sets (intensity units).

    W1 = integral over q in [0, 1] of |F_a^-1(q) - F_b^-1(q)|, evaluated on a grid of
    ``quantiles`` points (exact up to the grid for any sizes of a and b).
    """
    q = np.linspace(0.0, 1.0, quantiles)
    qa = np.quantile(np.asarray(a, np.float64).ravel(), q)
    qb = np.quantile(np.asarray(b, np.float64).ravel(), q)
    d = np.abs(qa - qb)
    return float(np.mean((d[:-1] + d[1:]) / 2))  # trapezoid rule on the uniform q grid


def bright_fraction(images: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of pixels above ``threshold`` (same intensity units as the images): the filament coverage."""
    return float((np.asarray(images) > threshold).mean())
