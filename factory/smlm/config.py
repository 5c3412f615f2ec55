"""Run-level SMLM config: every per-sample parameter a fixed value or a [low, high] range.

:meth:`SmlmConfig.draw` turns the config into one sample's :class:`SmlmParams` with that
sample's generator. In a file (JSON or TOML, ``schemas/smlm.v1.json``) a parameter is written
as in the optics config: ``1000``, ``[200, 2000]`` (uniform) or ``{low, high, log = true}``
(log-uniform). Run-level settings are single values because they fix array shapes or the
meaning of a target: ``downsample`` (camera pixel = downsample x HR pixel), ``n_frames``,
``kde_sigma_nm``, and the sCMOS maps (``camera_maps = "scmos"`` with
``read_noise_map_log_sigma``, ``gain_map_rel_std``, ``offset_map_std_adu``; see
``camera.CameraMaps``). The PSF width is ``psf_sigma_nm`` or ``na`` with ``wavelength_nm``
(sigma = 0.21 wavelength / NA); neither means 95 nm.

    schema_version = 1
    n_frames = 200
    kde_sigma_nm = 20
    labels_per_um2 = {low = 30, high = 300, log = true}
    k_on_per_s = {low = 0.01, high = 1, log = true}
    k_off_per_s = [20, 60]
    frame_time_ms = 20

Files are validated twice: hand-written checks with one sentence naming the field, then the
JSON Schema (``jsonschema``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from factory.errors import FactoryError
from factory.optics.config import Range
from factory.optics.params import check_offset_fits
from factory.optics.psf import sigma_from_na_nm
from factory.store import schemas
from factory.smlm.params import INTEGER_FIELDS, CameraMapsKind, SmlmParams, check_switching, check_value, parse_camera_maps

SCHEMA_VERSION = 1
DEFAULT_PSF_SIGMA_NM = 95.0
RANGE_FIELDS = ("labels_per_um2", "k_on_per_s", "k_off_per_s", "k_bleach_per_s", "frame_time_ms", "brightness_photons",
                "brightness_log_sigma", "psf_sigma_nm", "na", "wavelength_nm", "background_photons",
                "background_variation", "background_sigma_nm", "qe", "read_noise_e", "em_gain", "gain_e_per_adu",
                "offset_adu", "bit_depth", "spurious_charge")
RUN_FIELDS = ("downsample", "n_frames", "kde_sigma_nm", "read_noise_map_log_sigma", "gain_map_rel_std",
              "offset_map_std_adu")
OPTIONAL_FIELDS = ("psf_sigma_nm", "na", "wavelength_nm")


def _fixed(value: float) -> Range:
    return Range(value, value)


@dataclass(frozen=True)
class SmlmConfig:
    """Run-level SMLM stage: per-sample parameters as values or ranges (units in the names;
    meanings in ``factory.smlm.params``). The plain constructor holds single values (those of
    ``SmlmParams()``); :meth:`defaults` gives the dataset ranges. Numbers and (low, high)
    tuples are accepted and become Ranges."""

    downsample: int = 4
    n_frames: int = 100
    kde_sigma_nm: float = 20.0
    camera_maps: CameraMapsKind = CameraMapsKind.NONE
    read_noise_map_log_sigma: float = 0.3
    gain_map_rel_std: float = 0.02
    offset_map_std_adu: float = 2.0
    labels_per_um2: Range = _fixed(100.0)
    k_on_per_s: Range = _fixed(0.1)
    k_off_per_s: Range = _fixed(30.0)
    k_bleach_per_s: Range = _fixed(0.5)
    frame_time_ms: Range = _fixed(20.0)
    brightness_photons: Range = _fixed(2000.0)
    brightness_log_sigma: Range = _fixed(0.3)
    psf_sigma_nm: Range | None = None
    na: Range | None = None
    wavelength_nm: Range | None = None
    background_photons: Range = _fixed(20.0)
    background_variation: Range = _fixed(0.3)
    background_sigma_nm: Range = _fixed(2000.0)
    qe: Range = _fixed(0.8)
    read_noise_e: Range = _fixed(1.6)
    em_gain: Range = _fixed(1.0)
    gain_e_per_adu: Range = _fixed(0.5)
    offset_adu: Range = _fixed(100.0)
    bit_depth: Range = Range(16, 16)
    spurious_charge: Range = _fixed(0.0)

    @classmethod
    def defaults(cls) -> "SmlmConfig":
        """The dataset ranges (``generate --mode smlm`` without a config file): label density
        30-300 per um^2 and k_on 0.01-1 /s (both log-uniform) with k_off 20-60 /s span sparse
        (~0.005 active emitters per um^2 per frame) to dense (~15) data; frame time 10-30 ms;
        brightness 500-5000 photons per on-frame (log-uniform, log-sd 0.3 between emitters);
        bleaching 0-1 /s; PSF sigma 90-130 nm; background 5-60 photons per pixel; an sCMOS-like
        camera fixed at QE 0.8, 1.6 e- read noise, 0.5 e-/ADU, offset 100 ADU, 16 bit."""
        return cls(labels_per_um2=Range(30.0, 300.0, log=True), k_on_per_s=Range(0.01, 1.0, log=True),
                   k_off_per_s=Range(20.0, 60.0), k_bleach_per_s=Range(0.0, 1.0), frame_time_ms=Range(10.0, 30.0),
                   brightness_photons=Range(500.0, 5000.0, log=True), psf_sigma_nm=Range(90.0, 130.0),
                   background_photons=Range(5.0, 60.0))

    def __post_init__(self) -> None:
        for name in RUN_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (list, tuple, dict, Range)):
                raise FactoryError(f"{name} must be one number for the whole run, not a range.")
            check_value(name, value)
            object.__setattr__(self, name, int(value) if name in INTEGER_FIELDS else float(value))
        object.__setattr__(self, "camera_maps", parse_camera_maps(self.camera_maps))
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_FIELDS:
                object.__setattr__(self, name, Range.parse(name, value, check=check_value))
        if (self.na is None) != (self.wavelength_nm is None):
            raise FactoryError("na and wavelength_nm must be given together (or neither).")
        if self.na is not None and self.psf_sigma_nm is not None:
            raise FactoryError("give either psf_sigma_nm or na with wavelength_nm, not both.")
        if self.na is None and self.psf_sigma_nm is None:
            object.__setattr__(self, "psf_sigma_nm", _fixed(DEFAULT_PSF_SIGMA_NM))
        check_offset_fits(self.offset_adu.high, self.bit_depth.low)
        check_switching(self.k_on_per_s.high, self.k_off_per_s.high, self.frame_time_ms.high, self.n_frames)

    def draw(self, rng: np.random.Generator) -> SmlmParams:
        """One sample's parameters. Always consumes the same draws from rng (one uniform per range
        field, then the background seed), fixed or not, so fixing one parameter never shifts another."""
        u = rng.random(len(RANGE_FIELDS))  # (len(RANGE_FIELDS),) one uniform per range field, in order
        background_seed = int(rng.integers(0, 2**63 - 1))
        v = {name: (None if getattr(self, name) is None else getattr(self, name).sample(ui, name in INTEGER_FIELDS))
             for name, ui in zip(RANGE_FIELDS, u)}
        if v["na"] is not None:
            v["psf_sigma_nm"] = sigma_from_na_nm(v["wavelength_nm"], v["na"])
        return SmlmParams(**v, background_seed=background_seed, downsample=self.downsample, n_frames=self.n_frames,
                          kde_sigma_nm=self.kde_sigma_nm, camera_maps=self.camera_maps)

    def to_dict(self) -> dict:
        """JSON-safe dict (goes into the store's run spec); from_dict(to_dict()) == self."""
        d: dict = {"schema_version": SCHEMA_VERSION, "camera_maps": self.camera_maps.value}
        d.update({name: getattr(self, name) for name in RUN_FIELDS})
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            d[name] = None if value is None else value.to_json()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SmlmConfig":
        """Validate (hand-written checks, then the JSON Schema) and build; null means 'not given'."""
        fields_given = schemas.check_config_dict(d, SCHEMA_VERSION, {f.name for f in fields(cls)}, "smlm config")
        cfg = cls(**fields_given)
        schemas.validate_config(d, "smlm.v1.json", "smlm config")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "SmlmConfig":
        """Read a .json or .toml config file and validate it; errors name the file and the field."""
        d = schemas.read_config_file(path, "smlm config")
        try:
            return cls.from_dict(d)
        except FactoryError as exc:
            raise FactoryError(f"{path}: {exc}") from None
