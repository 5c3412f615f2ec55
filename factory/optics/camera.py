"""The camera: expected photons per LR pixel -> one noisy uint16 frame in ADU.

For expected photons E per pixel (signal + background):

    n_e   ~ Poisson(qe E)                         photoelectrons (Poisson photons thinned by QE)
    n_em  ~ Gamma(shape = n_e, scale = G)         EM register of gain G (skipped when G = 1);
                                                  Var = 2 G^2 qe E: excess noise factor F^2 = 2
    e_out = n_em + read_noise_e * N(0, 1)         electrons at the amplifier
    ADU   = clip(round(e_out / gain_e_per_adu + offset_adu), 0, 2^bit_depth - 1)

(Basden, Haniff & Mackay 2003 for the gamma EM-register model.) Quantization adds
gain_e_per_adu^2 / 12 e-^2 of variance. All randomness comes from the caller's generator.

Optional keyword overrides (used by ``factory.smlm``; without them the result is bit for bit
what it always was): ``spurious_charge`` adds clock-induced charge, mean electrons per pixel per
frame created before the EM register, to the Poisson mean (n_e ~ Poisson(qe E + c), as DECODE's
``Photon2Camera`` does); ``read_noise_e``, ``gain_e_per_adu`` and ``offset_adu`` replace the
params' scalars by arrays that broadcast against the trailing (h, w) axes: an sCMOS camera's
per-pixel maps (Huang et al. 2013, Nat. Methods 10:653).
"""
from __future__ import annotations

import numpy as np

from factory.optics.params import DegradationParams


def detect(expected: np.ndarray, params: DegradationParams, rng: np.random.Generator, *,
           spurious_charge: float = 0.0, read_noise_e: np.ndarray | None = None,
           gain_e_per_adu: np.ndarray | None = None, offset_adu: np.ndarray | None = None) -> np.ndarray:
    """Expected photons per pixel (any shape) -> uint16 ADU of the same shape (overrides: module docstring)."""
    mean_e = params.qe * np.asarray(expected, dtype=np.float64)  # (..., h, w) expected photoelectrons
    if spurious_charge > 0.0:
        mean_e += spurious_charge
    electrons = rng.poisson(mean_e)  # (..., h, w) photoelectrons
    if params.em_gain > 1.0:
        electrons = rng.gamma(electrons, params.em_gain)  # shape 0 gives exactly 0
    gain = params.gain_e_per_adu if gain_e_per_adu is None else gain_e_per_adu  # scalar or (h, w) e-/ADU
    read = params.read_noise_e if read_noise_e is None else read_noise_e  # scalar or (h, w) e- rms
    offset = params.offset_adu if offset_adu is None else offset_adu  # scalar or (h, w) ADU
    adu = electrons * (1.0 / gain) + offset  # (..., h, w) float64
    if np.any(np.asarray(read) > 0.0):
        adu += (read / gain) * rng.standard_normal(adu.shape, dtype=np.float32)
    np.rint(adu, out=adu)
    return np.clip(adu, 0, 2**params.bit_depth - 1, out=adu).astype(np.uint16)
