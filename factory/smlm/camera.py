"""The camera as the estimators see it, and the sCMOS per-pixel maps drawn once per run.

:class:`CameraModel` is the noise model of the CRLB and the MLE. Counts are put on the scale
of input photoelectrons, the Poisson-normal approximation of Huang et al. 2013 (Nat. Methods
10:653, per-pixel for sCMOS) and Smith et al. 2010 (Nat. Methods 7:373):

    e  = (ADU - offset_adu) gain_e_per_adu / em_gain               input-referred electrons
    x' = e + s^2,  s = read_noise_e / em_gain                      ~ Poisson(qe (mu + b) + c + s^2)

with mu the emitter's photons in the pixel, b the background photons and c the spurious
charge. With an EM register (em_gain > 1) the output variance is twice the Poisson one (excess
noise factor F^2 = 2; Mortensen et al. 2010, Nat. Methods 7:377): the Fisher information is
halved. ``read_noise_e``, ``gain_e_per_adu`` and ``offset_adu`` may be arrays that broadcast
against the ROI arrays (per-pixel sCMOS values).

:class:`CameraMaps` are an sCMOS camera's pixel-to-pixel differences, stored once per run:

    read noise  = read_noise_e   x r[r, c],   r = exp(s_r z - s_r^2 / 2)         (log-normal, mean 1)
    gain        = gain_e_per_adu x g[r, c],   g = exp(s_g z - s_g^2 / 2)         (mean 1)
    offset      = offset_adu     + o[r, c],   o = offset_map_std_adu z           (mean 0)

with z ~ N(0, 1) independent per pixel. Relative maps compose with per-sample camera ranges;
:meth:`CameraMaps.physical` gives the values in e- rms, e-/ADU and ADU for one sample. The log-normal
read-noise factor gives the long upper tail of measured sCMOS read-noise distributions (Huang et al. 2013).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.smlm.config import SmlmConfig
from factory.smlm.params import CameraMapsKind, SmlmParams

# Run-level generators use a spawn key no sample id (< 2**63) can produce: see factory.seeding.
_RUN_LEVEL_KEY = 2**64
_ROLE_CAMERA_MAPS = 0


@dataclass(frozen=True)
class CameraModel:
    """Noise model of one camera (module docstring); scalars or arrays broadcasting to the ROIs."""

    qe: float = 1.0
    read_noise_e: float | np.ndarray = 0.0
    em_gain: float = 1.0
    gain_e_per_adu: float | np.ndarray = 1.0
    offset_adu: float | np.ndarray = 0.0
    spurious_charge: float = 0.0

    @classmethod
    def from_params(cls, params: SmlmParams) -> "CameraModel":
        """The sample's camera with every pixel alike (no maps)."""
        return cls(qe=params.qe, read_noise_e=params.read_noise_e, em_gain=params.em_gain,
                   gain_e_per_adu=params.gain_e_per_adu, offset_adu=params.offset_adu,
                   spurious_charge=params.spurious_charge)

    @property
    def excess_noise_factor_sq(self) -> float:
        """F^2: 2 with an EM register, 1 without."""
        return 2.0 if self.em_gain > 1.0 else 1.0

    @property
    def input_read_var_e2(self) -> float | np.ndarray:
        """Read-noise variance referred to the EM register's input, e-^2 (s^2 of the module docstring)."""
        return (np.asarray(self.read_noise_e, dtype=np.float64) / self.em_gain) ** 2

    def electrons(self, adu: np.ndarray) -> np.ndarray:
        """ADU -> photo-electrons above the offset at the EM register's input: (ADU - offset) gain / EM gain,
        float32 (not clipped: read noise makes some negative). The input of localization networks."""
        return ((np.asarray(adu, dtype=np.float64) - self.offset_adu) * (self.gain_e_per_adu / self.em_gain)).astype(np.float32)

    def to_poisson_counts(self, adu: np.ndarray) -> np.ndarray:
        """ADU -> x' = input electrons + s^2, the Poisson-normal data (float64, clipped at 0)."""
        electrons = (np.asarray(adu, dtype=np.float64) - self.offset_adu) * (self.gain_e_per_adu / self.em_gain)
        return np.maximum(electrons + self.input_read_var_e2, 0.0)

    def expected_counts(self, photons: np.ndarray) -> np.ndarray:
        """Expected photons per pixel (signal + background) -> the mean of x': qe E + c + s^2."""
        return self.qe * photons + self.spurious_charge + self.input_read_var_e2


@dataclass(frozen=True)
class CameraMaps:
    """Per-pixel sCMOS maps, each (h, w) float32 (module docstring): stored once per run, exactly as used."""

    read_noise_factor: np.ndarray  # (h, w) multiplies read_noise_e; mean 1
    gain_factor: np.ndarray  # (h, w) multiplies gain_e_per_adu; mean 1
    offset_shift_adu: np.ndarray  # (h, w) added to offset_adu; mean 0

    @classmethod
    def draw(cls, cfg: SmlmConfig, run_seed: int, shape: tuple[int, int]) -> "CameraMaps | None":
        """The run's maps from its seed alone (same (seed, shape) -> same maps); None without maps."""
        if cfg.camera_maps is CameraMapsKind.NONE:
            return None
        seq = np.random.SeedSequence(int(run_seed), spawn_key=(_RUN_LEVEL_KEY, _ROLE_CAMERA_MAPS))
        z = np.random.default_rng(seq).standard_normal((3, *shape))  # (3, h, w)
        s_r, s_g = cfg.read_noise_map_log_sigma, cfg.gain_map_rel_std
        return cls(read_noise_factor=np.exp(s_r * z[0] - 0.5 * s_r**2).astype(np.float32),
                   gain_factor=np.exp(s_g * z[1] - 0.5 * s_g**2).astype(np.float32),
                   offset_shift_adu=(cfg.offset_map_std_adu * z[2]).astype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.read_noise_factor.shape

    def physical(self, params: SmlmParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(read noise e- rms, gain e-/ADU, offset ADU), each (h, w), for one sample's camera.

        The offset stays within [0, 2^bit_depth - 2] ADU so that no pixel's bias saturates."""
        shift = self.offset_shift_adu.astype(np.float64)  # (h, w) ADU
        offset = np.clip(params.offset_adu + shift, 0.0, 2.0**params.bit_depth - 2.0)  # (h, w) ADU
        read = params.read_noise_e * self.read_noise_factor.astype(np.float64)  # (h, w) e- rms
        return read, params.gain_e_per_adu * self.gain_factor.astype(np.float64), offset

    def camera_model(self, params: SmlmParams) -> CameraModel:
        """The sample's camera with these maps, (h, w) arrays in place of the scalars."""
        read, gain, offset = self.physical(params)
        return CameraModel(qe=params.qe, read_noise_e=read, em_gain=params.em_gain, gain_e_per_adu=gain,
                           offset_adu=offset, spurious_charge=params.spurious_charge)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The three (h, w) float32 maps by name, for storage; from_arrays(to_arrays()) gives the same bytes."""
        return {"read_noise_factor": self.read_noise_factor, "gain_factor": self.gain_factor,
                "offset_shift_adu": self.offset_shift_adu}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "CameraMaps":
        return cls(**{k: np.asarray(arrays[k], dtype=np.float32) for k in ("read_noise_factor", "gain_factor",
                                                                             "offset_shift_adu")})
