"""Per-sample SMLM parameters: one value for every stage, drawn from an :class:`SmlmConfig`.

An :class:`SmlmParams` is what one frame stack was made with; :meth:`SmlmParams.to_record`
flattens it into manifest columns whose names carry their units (``RECORD_FIELDS`` lists each
column with its Arrow type, unit and meaning, for the manifest schema). The physical limits
of every field live in one table, ``BOUNDS`` (the optics table for the fields the two stages
share, plus the SMLM ones); the config, the params and ``schemas/smlm.v1.json`` enforce it.

Rates are those of the photophysics chain (``blinking``): off -> on ``k_on_per_s``, on -> off
``k_off_per_s``, on -> bleached ``k_bleach_per_s``, all in 1/s; one frame lasts
``frame_time_ms``. ``brightness_photons`` is an emitter population's mean photons per full
on-frame (before QE); each emitter's own brightness is log-normal around it with log-sd
``brightness_log_sigma``. ``background_photons`` is the mean background per camera pixel and
frame. ``spurious_charge`` is the mean number of clock-induced-charge electrons per pixel per
frame, created before the EM register.
"""
from __future__ import annotations

import enum
import math
import numbers
from dataclasses import asdict, dataclass

from factory.errors import FactoryError
from factory.optics.params import BOUNDS as OPTICS_BOUNDS
from factory.optics.params import Bound, DegradationParams, PsfModel, check_offset_fits


class CameraMapsKind(str, enum.Enum):
    """Per-pixel camera maps: none (every pixel alike) or an sCMOS's read-noise/gain/offset maps."""

    NONE = "none"
    SCMOS = "scmos"


def parse_camera_maps(value) -> CameraMapsKind:
    try:
        return CameraMapsKind(value)
    except ValueError:
        raise FactoryError(f"camera_maps must be one of {[m.value for m in CameraMapsKind]}, got {value!r}.") from None


MAX_SWITCHES_PER_EMITTER = 20_000  # expected on/off switches of one emitter over a stack; beyond: refuse

BOUNDS: dict[str, Bound] = {
    **{k: OPTICS_BOUNDS[k] for k in ("background_photons", "background_variation", "background_sigma_nm",
                                     "psf_sigma_nm", "na", "wavelength_nm", "qe", "read_noise_e", "em_gain",
                                     "gain_e_per_adu", "offset_adu", "bit_depth", "downsample")},
    "labels_per_um2": Bound(0.0, 1e5, unit="labels per um^2"),
    "k_on_per_s": Bound(0.0, 1e6, unit="1/s"),
    "k_off_per_s": Bound(0.0, 1e6, low_open=True, unit="1/s"),
    "k_bleach_per_s": Bound(0.0, 1e6, unit="1/s"),
    "frame_time_ms": Bound(0.0, 1e5, low_open=True, unit="ms"),
    "brightness_photons": Bound(0.0, 1e9, low_open=True, unit="photons per on-frame"),
    "brightness_log_sigma": Bound(0.0, 3.0),
    "spurious_charge": Bound(0.0, 100.0, unit="e- per pixel per frame"),
    "n_frames": Bound(1, 1e6, unit="frames"),
    "kde_sigma_nm": Bound(0.0, 1e5, low_open=True, unit="nm"),
    "read_noise_map_log_sigma": Bound(0.0, 3.0),
    "gain_map_rel_std": Bound(0.0, 0.5),
    "offset_map_std_adu": Bound(0.0, 1000.0, unit="ADU"),
}
INTEGER_FIELDS = ("bit_depth", "downsample", "n_frames")


def check_value(name: str, value: float) -> None:
    """Raise a FactoryError naming the field when a value lies outside its physical bounds."""
    bound = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FactoryError(f"{name} must be a number, got {value!r}.")
    if name in INTEGER_FIELDS and value != int(value):
        raise FactoryError(f"{name} must be an integer, got {value!r}.")
    if not bound.contains(float(value)):
        raise FactoryError(f"{name} must be {bound.describe()}, got {value!r}.")


def check_switching(k_on_per_s: float, k_off_per_s: float, frame_time_ms: float, n_frames: int) -> None:
    """Refuse rates that would make each emitter switch more than MAX_SWITCHES_PER_EMITTER times."""
    duration_s = frame_time_ms * 1e-3 * n_frames
    switches = 2.0 * duration_s / (1.0 / max(k_on_per_s, 1e-300) + 1.0 / k_off_per_s)  # stationary switching rate x T
    if switches > MAX_SWITCHES_PER_EMITTER:
        raise FactoryError(f"k_on_per_s {k_on_per_s:g} and k_off_per_s {k_off_per_s:g} switch each emitter ~{switches:.3g} "
                           f"times over {n_frames} frames of {frame_time_ms:g} ms (limit {MAX_SWITCHES_PER_EMITTER}); "
                           "lower the rates or the stack length.")


@dataclass(frozen=True)
class SmlmParams:
    """Every value of the SMLM stage for one sample (units: module docstring and field names).

    ``na``/``wavelength_nm`` are recorded when the PSF width came from them (sigma = 0.21
    wavelength / NA), else None. ``downsample``, ``n_frames``, ``kde_sigma_nm`` and
    ``camera_maps`` are the run's (one value for every sample) and are recorded for completeness.
    """

    labels_per_um2: float = 100.0
    k_on_per_s: float = 0.1
    k_off_per_s: float = 30.0
    k_bleach_per_s: float = 0.5
    frame_time_ms: float = 20.0
    brightness_photons: float = 2000.0
    brightness_log_sigma: float = 0.3
    psf_sigma_nm: float = 95.0
    na: float | None = None
    wavelength_nm: float | None = None
    background_photons: float = 20.0
    background_variation: float = 0.3
    background_sigma_nm: float = 2000.0
    background_seed: int = 0
    qe: float = 0.8
    read_noise_e: float = 1.6
    em_gain: float = 1.0
    gain_e_per_adu: float = 0.5
    offset_adu: float = 100.0
    bit_depth: int = 16
    spurious_charge: float = 0.0
    downsample: int = 4
    n_frames: int = 100
    kde_sigma_nm: float = 20.0
    camera_maps: CameraMapsKind = CameraMapsKind.NONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_maps", parse_camera_maps(self.camera_maps))
        for name in BOUNDS:
            if name not in self.__dataclass_fields__:
                continue  # a run-level map setting (SmlmConfig only)
            value = getattr(self, name)
            if name in ("na", "wavelength_nm") and (value is None or (isinstance(value, float) and math.isnan(value))):
                object.__setattr__(self, name, None)
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
        check_switching(self.k_on_per_s, self.k_off_per_s, self.frame_time_ms, self.n_frames)

    @property
    def on_probability(self) -> float:
        """Stationary probability of the on state without bleaching, k_on / (k_on + k_off)."""
        return self.k_on_per_s / (self.k_on_per_s + self.k_off_per_s)

    def optics(self) -> DegradationParams:
        """The optics-stage params that share this sample's background and camera (photons unused)."""
        return DegradationParams(photons=0.0, background_photons=self.background_photons,
                                 background_variation=self.background_variation,
                                 background_sigma_nm=self.background_sigma_nm, background_seed=self.background_seed,
                                 psf_model=PsfModel.ERF, psf_sigma_nm=self.psf_sigma_nm, na=self.na,
                                 wavelength_nm=self.wavelength_nm, downsample=self.downsample, qe=self.qe,
                                 read_noise_e=self.read_noise_e, em_gain=self.em_gain,
                                 gain_e_per_adu=self.gain_e_per_adu, offset_adu=self.offset_adu,
                                 bit_depth=self.bit_depth)

    def to_record(self) -> dict[str, float | int | str | None]:
        """Flat, JSON- and Arrow-safe dict for the manifest; column names carry units (RECORD_FIELDS)."""
        record = asdict(self)
        record["camera_maps"] = self.camera_maps.value
        return record

    @classmethod
    def from_record(cls, record: dict) -> "SmlmParams":
        """Rebuild the params from a manifest row (extra columns are ignored)."""
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})


# (name, Arrow type, nullable, unit, description) of every to_record() column, in order.
RECORD_FIELDS: tuple[tuple[str, str, bool, str, str], ...] = (
    ("labels_per_um2", "float64", False, "labels per um^2", "Mean label density over the field (Poisson intensity at the mean HR density)."),
    ("k_on_per_s", "float64", False, "1/s", "Blinking rate off -> on."),
    ("k_off_per_s", "float64", False, "1/s", "Blinking rate on -> off."),
    ("k_bleach_per_s", "float64", False, "1/s", "Bleaching rate on -> bleached (absorbing)."),
    ("frame_time_ms", "float64", False, "ms", "Exposure time of one frame (no dead time)."),
    ("brightness_photons", "float64", False, "photons per on-frame", "Population mean photons of an emitter on for a whole frame, before QE."),
    ("brightness_log_sigma", "float64", False, "", "Log-normal sd of the per-emitter brightness (mean kept at brightness_photons)."),
    ("psf_sigma_nm", "float64", False, "nm", "Gaussian PSF standard deviation in the sample plane."),
    ("na", "float64", True, "", "Numerical aperture when the PSF width came from it, else null."),
    ("wavelength_nm", "float64", True, "nm", "Emission wavelength when the PSF width came from it, else null."),
    ("background_photons", "float64", False, "photons per camera pixel per frame", "Mean background."),
    ("background_variation", "float64", False, "", "Log-amplitude of the smooth background structure (~ relative std)."),
    ("background_sigma_nm", "float64", False, "nm", "Correlation length of the background structure."),
    ("background_seed", "int64", False, "", "Seed of the background field (drawn from the sample's rng)."),
    ("qe", "float64", False, "", "Camera quantum efficiency."),
    ("read_noise_e", "float64", False, "e- rms", "Gaussian read noise (times the read-noise map for sCMOS maps)."),
    ("em_gain", "float64", False, "", "EM register gain (1 = none)."),
    ("gain_e_per_adu", "float64", False, "e-/ADU", "Conversion gain (times the gain map for sCMOS maps)."),
    ("offset_adu", "float64", False, "ADU", "Camera offset (plus the offset map for sCMOS maps)."),
    ("bit_depth", "int32", False, "bits", "ADC bit depth."),
    ("spurious_charge", "float64", False, "e- per pixel per frame", "Mean clock-induced charge before the EM register."),
    ("downsample", "int32", False, "", "Camera pixel = downsample x HR pixel."),
    ("n_frames", "int32", False, "frames", "Frames per sample."),
    ("kde_sigma_nm", "float64", False, "nm", "Sigma of the unit-mass Gaussians of the KDE target."),
    ("camera_maps", "string", False, "", "Per-pixel camera maps: none or scmos (drawn once per run)."),
)
