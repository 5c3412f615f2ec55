"""The camera: expected photons per LR pixel -> one noisy uint16 frame in ADU.

For expected photons E per pixel (signal + background):

    n_e   ~ Poisson(qe E)                         photoelectrons (Poisson photons thinned by QE)
    n_em  ~ Gamma(shape = n_e, scale = G)         EM register of gain G (skipped when G = 1);
                                                  Var = 2 G^2 qe E: excess noise factor F^2 = 2
    e_out = n_em + read_noise_e * N(0, 1)         electrons at the amplifier
    ADU   = clip(round(e_out / gain_e_per_adu + offset_adu), 0, 2^bit_depth - 1)

(Basden, Haniff & Mackay 2003 for the gamma EM-register model.) Quantization adds
gain_e_per_adu^2 / 12 e-^2 of variance. All randomness comes from the caller's generator.
"""
from __future__ import annotations

import numpy as np

from factory.optics.params import DegradationParams


def detect(expected: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """Expected photons per pixel (any shape) -> uint16 ADU of the same shape."""
    electrons = rng.poisson(params.qe * np.asarray(expected, dtype=np.float64))  # (..., h, w) photoelectrons
    if params.em_gain > 1.0:
        electrons = rng.gamma(electrons, params.em_gain)  # shape 0 gives exactly 0
    adu = electrons * (1.0 / params.gain_e_per_adu) + params.offset_adu  # (..., h, w) float64
    if params.read_noise_e > 0.0:
        adu += (params.read_noise_e / params.gain_e_per_adu) * rng.standard_normal(adu.shape, dtype=np.float32)
    np.rint(adu, out=adu)
    return np.clip(adu, 0, 2**params.bit_depth - 1, out=adu).astype(np.uint16)
