"""Per-sample degradation parameters: one fixed value for every stage of the optical model.

A :class:`DegradationParams` is what one LR image was made with. It is drawn from a
run-level :class:`~factory.optics.config.DegradationConfig` with the sample's own
generator, and :meth:`DegradationParams.to_record` flattens it into manifest columns
whose names carry their units. ``photons`` is defined once, here, by ``photon_scale``:

    peak     (default; what every store made before this field existed means)
             photons = expected SIGNAL photons at the brightest LR pixel of each image,
             after the PSF and binning, before background, QE and noise.
    density  photons = expected SIGNAL photons per unit of HR density per HR pixel,
             before QE: E_signal = photons * blur_bin(HR). An HR pixel of density d
             sends photons * d photons, spread by the PSF.

``peak`` rescales every image by its own brightest spot, so the contrast between a filament
and the background depends on what else is in the field and on how the structure source
distributes density (a DDPM sample with diffuse haze and a clean mathematical filament get the
same peak but different filament-to-background ratios). ``density`` ties the signal to the HR
density itself, the same for every source whose density means the same thing (factory's
sources scale density like a training image: the 99.9th percentile of an SR image -> 1,
:func:`factory.images.normalize_unit`).

The bounds below are the physics' own limits; the config, the params and the JSON
schema (``schemas/degradation.v1.json``) all enforce the same table.
"""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import asdict, dataclass

from factory.errors import FactoryError


class PhotonScale(str, enum.Enum):
    """What ``photons`` means (see the module docstring)."""

    PEAK = "peak"  # expected signal photons at each image's brightest LR pixel
    DENSITY = "density"  # expected signal photons per unit HR density per HR pixel


def parse_photon_scale(value) -> PhotonScale:
    """A PhotonScale from itself or its string value; anything else is one FactoryError sentence."""
    try:
        return PhotonScale(value)
    except ValueError:
        raise FactoryError(f"photon_scale must be one of {[m.value for m in PhotonScale]}, got {value!r}.") from None


class PsfModel(str, enum.Enum):
    """How the Gaussian PSF is put on the HR grid."""

    GAUSSIAN = "gaussian"  # sampled at HR pixel centres
    ERF = "erf"  # integrated over each HR pixel (difference of error functions)



def parse_psf_model(value) -> PsfModel:
    """A PsfModel from itself or its string value; anything else is one FactoryError sentence."""
    try:
        return PsfModel(value)
    except ValueError:
        raise FactoryError(f"psf_model must be one of {[m.value for m in PsfModel]}, got {value!r}.") from None

@dataclass(frozen=True)
class Bound:
    """Allowed interval of one parameter; an open end excludes its value."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    unit: str = ""

    def describe(self) -> str:
        lo = f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if math.isinf(self.high) else f" and {'<' if self.high_open else '<='} {self.high:g}"
        return lo + hi + (f" {self.unit}" if self.unit else "")

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


MAX_BIT_DEPTH = 16  # output is uint16
MAX_PHOTONS = 1e9  # far beyond any pixel's full well; keeps Poisson draws finite

BOUNDS: dict[str, Bound] = {
    "photons": Bound(0.0, MAX_PHOTONS, unit="photons"),
    "background_photons": Bound(0.0, MAX_PHOTONS, unit="photons per LR pixel"),
    "background_variation": Bound(0.0, 5.0),
    "background_sigma_nm": Bound(0.0, low_open=True, unit="nm"),
    "psf_sigma_nm": Bound(0.0, low_open=True, unit="nm"),
    "na": Bound(0.0, 1.7, low_open=True),
    "wavelength_nm": Bound(0.0, low_open=True, unit="nm"),
    "qe": Bound(0.0, 1.0, low_open=True),
    "read_noise_e": Bound(0.0, unit="e- rms"),
    "em_gain": Bound(1.0),
    "gain_e_per_adu": Bound(0.0, low_open=True, unit="e-/ADU"),
    "offset_adu": Bound(0.0, 2.0**MAX_BIT_DEPTH - 1, unit="ADU"),
    "bit_depth": Bound(1, MAX_BIT_DEPTH, unit="bits"),
    "downsample": Bound(1),
}
INTEGER_FIELDS = ("bit_depth", "downsample")


def check_value(name: str, value: float) -> None:
    """Raise a FactoryError naming the field when a value lies outside its physical bounds."""
    bound = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FactoryError(f"{name} must be a number, got {value!r}.")
    if name in INTEGER_FIELDS and value != int(value):
        raise FactoryError(f"{name} must be an integer, got {value!r}.")
    if not bound.contains(float(value)):
        raise FactoryError(f"{name} must be {bound.describe()}, got {value!r}.")


def check_offset_fits(offset_adu: float, bit_depth: int) -> None:
    """An offset at or above the camera's full scale would saturate every pixel."""
    full_scale = 2**int(bit_depth) - 1
    if offset_adu >= full_scale:
        raise FactoryError(f"offset_adu {offset_adu:g} must be below the full scale {full_scale} ADU of a {bit_depth}-bit camera.")


@dataclass(frozen=True)
class DegradationParams:
    """Every value of the optical model for one image (see the module docstring for ``photons``).

    Stages: HR density -> photons (``photon_scale``) -> PSF (``psf_model``, ``psf_sigma_nm``) -> sum-bin by
    ``downsample`` -> + background (mean ``background_photons`` per LR pixel, log-normal
    structured field of log-amplitude ``background_variation`` and Gaussian correlation
    length ``background_sigma_nm``, drawn from ``background_seed``) -> Poisson(``qe`` x photons)
    -> EM register (``em_gain``, 1 = none) -> + read noise (``read_noise_e`` e- rms) ->
    / ``gain_e_per_adu`` + ``offset_adu`` -> round, clip to ``bit_depth`` bits.
    ``na`` and ``wavelength_nm`` are recorded when the PSF width came from them
    (sigma = 0.21 wavelength / NA), else None.
    """

    photons: float = 1000.0
    photon_scale: PhotonScale = PhotonScale.PEAK
    background_photons: float = 10.0
    background_variation: float = 0.3
    background_sigma_nm: float = 2000.0
    background_seed: int = 0
    psf_model: PsfModel = PsfModel.GAUSSIAN
    psf_sigma_nm: float = 95.0
    na: float | None = None
    wavelength_nm: float | None = None
    downsample: int = 4
    qe: float = 0.8
    read_noise_e: float = 1.6
    em_gain: float = 1.0
    gain_e_per_adu: float = 0.5
    offset_adu: float = 100.0
    bit_depth: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "psf_model", parse_psf_model(self.psf_model))
        object.__setattr__(self, "photon_scale", parse_photon_scale(self.photon_scale))
        for name in BOUNDS:
            value = getattr(self, name)
            if name in ("na", "wavelength_nm") and (value is None or (isinstance(value, float) and math.isnan(value))):
                object.__setattr__(self, name, None)  # not used: the PSF width was given directly
                continue
            check_value(name, value)
            object.__setattr__(self, name, int(value) if name in INTEGER_FIELDS else float(value))
        if (self.na is None) != (self.wavelength_nm is None):
            raise FactoryError("na and wavelength_nm must be given together (or neither).")
        seed = self.background_seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise FactoryError(f"background_seed must be a non-negative integer, got {seed!r}.")
        object.__setattr__(self, "background_seed", int(seed))
        check_offset_fits(self.offset_adu, self.bit_depth)

    def to_record(self) -> dict[str, float | int | str | None]:
        """Flat, JSON- and Arrow-safe dict for the manifest; column names carry units."""
        record = asdict(self)
        record["psf_model"] = self.psf_model.value
        record["photon_scale"] = self.photon_scale.value
        return record

    @classmethod
    def from_record(cls, record: dict) -> "DegradationParams":
        """Rebuild the params from a manifest row (extra columns are ignored)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in record.items() if k in names})
