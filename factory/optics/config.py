"""Run-level degradation config: every parameter a fixed value or a [low, high] range.

The config is what a run asks for; :meth:`DegradationConfig.draw` turns it into the
:class:`~factory.optics.params.DegradationParams` of one sample, using that sample's
own generator. In a file (JSON or TOML, ``schemas/degradation.v1.json``) a parameter is

    1000                                  fixed
    [200, 2000]                           uniform in [low, high]
    {"low": 200, "high": 2000, "log": true}   log-uniform (for photon counts spanning decades)

``low == high`` is fixed. ``photon_scale`` (``peak`` | ``density``) says what ``photons`` means
(:mod:`factory.optics.params`); it is written by :meth:`DegradationConfig.to_dict` only when it is
not the default ``peak``, so that the run spec of every store made before the field existed still
equals the spec of the same run today (resume compares them). Integer parameters (``bit_depth``) draw uniformly from the
integers in [low, high]; ``downsample`` is one integer for the whole run because it fixes
the LR array shape. The PSF width is either ``psf_sigma_nm`` or ``na`` with
``wavelength_nm`` (sigma = 0.21 wavelength / NA), never both; neither means 95 nm.

Files are validated twice: hand-written checks with one-sentence errors naming the
field, then the JSON Schema with the ``jsonschema`` package (installed with Ray).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Callable
from pathlib import Path

import numpy as np

from factory.errors import FactoryError
from factory.store import schemas
from factory.optics.params import (INTEGER_FIELDS, DegradationParams, PhotonScale, PsfModel, check_offset_fits, check_value,
                                   parse_photon_scale, parse_psf_model)
from factory.optics.psf import sigma_from_na_nm

SCHEMA_VERSION = 1
DEFAULT_PSF_SIGMA_NM = 95.0  # ~ 0.21 * 670 nm / 1.49 (Alexa 647, oil TIRF objective)
RANGE_FIELDS = ("photons", "background_photons", "background_variation", "background_sigma_nm", "psf_sigma_nm",
                "na", "wavelength_nm", "qe", "read_noise_e", "em_gain", "gain_e_per_adu", "offset_adu", "bit_depth")
OPTIONAL_FIELDS = ("psf_sigma_nm", "na", "wavelength_nm")


@dataclass(frozen=True)
class Range:
    """A parameter's range [low, high], drawn uniformly (or log-uniformly); low == high is fixed."""

    low: float
    high: float
    log: bool = False

    @classmethod
    def parse(cls, name: str, value, check: Callable[[str, float], None] = check_value) -> "Range":
        """Accept a Range, a number, a (low, high) pair or a {"low", "high", "log"} mapping.

        ``check(name, end)`` raises for an end outside the field's bounds (default: the optics
        table ``params.BOUNDS``; ``factory.smlm`` passes its own)."""
        if isinstance(value, Range):
            low, high, log = value.low, value.high, value.log
        elif isinstance(value, dict):
            extra = set(value) - {"low", "high", "log"}
            if extra or not {"low", "high"} <= set(value) or not isinstance(value.get("log", False), bool):
                raise FactoryError(f"{name} must be a number, [low, high] or {{low, high, log: true|false}}, got {value!r}.")
            low, high, log = value["low"], value["high"], value.get("log", False)
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            (low, high), log = value, False
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            low = high = value
            log = False
        else:
            raise FactoryError(f"{name} must be a number or a [low, high] range, got {value!r}.")
        for end in (low, high):
            check(name, end)
        if low > high:
            raise FactoryError(f"{name} range has low {low} above high {high}.")
        if log and low <= 0:
            raise FactoryError(f"{name} is log-uniform, so its low end must be > 0, got {low}.")
        cast = int if name in INTEGER_FIELDS else float
        return cls(cast(low), cast(high), log)

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def sample(self, u: float, integer: bool = False) -> float | int:
        """Map a uniform number u in [0, 1) into the range (integers: uniform over low..high)."""
        if integer:
            return int(min(self.low + math.floor(u * (self.high - self.low + 1)), self.high))
        if self.fixed:
            return self.low
        if self.log:
            return float(self.low * math.exp(u * math.log(self.high / self.low)))
        return float(self.low + u * (self.high - self.low))

    def to_json(self):
        if self.fixed:
            return self.low
        if self.log:
            return {"low": self.low, "high": self.high, "log": True}
        return [self.low, self.high]


@dataclass(frozen=True)
class DegradationConfig:
    """Run-level optics: parameters as fixed values or ranges (see the module docstring).

    Units: ``photons`` is, with ``photon_scale`` = ``peak`` (default), the expected SIGNAL
    photons at the brightest LR pixel after PSF and binning, before background; with
    ``density``, the expected signal photons per unit of HR density per HR pixel;
    ``background_photons`` the MEAN background photons per
    LR pixel (0 = none); ``background_variation`` the log-amplitude of its smooth spatial
    structure (~ relative std; 0 = flat) with correlation length ``background_sigma_nm``;
    ``read_noise_e`` e- rms; ``gain_e_per_adu`` e-/ADU; ``offset_adu`` ADU; ``em_gain``
    1 = no EM register. Plain numbers and (low, high) tuples are accepted and become Ranges.
    """

    downsample: int = 4
    psf_model: PsfModel = PsfModel.GAUSSIAN
    photon_scale: PhotonScale = PhotonScale.PEAK
    psf_sigma_nm: Range | None = None
    na: Range | None = None
    wavelength_nm: Range | None = None
    photons: Range = Range(1000.0, 1000.0)
    background_photons: Range = Range(10.0, 10.0)
    background_variation: Range = Range(0.3, 0.3)
    background_sigma_nm: Range = Range(2000.0, 2000.0)
    qe: Range = Range(0.8, 0.8)
    read_noise_e: Range = Range(1.6, 1.6)
    em_gain: Range = Range(1.0, 1.0)
    gain_e_per_adu: Range = Range(0.5, 0.5)
    offset_adu: Range = Range(100.0, 100.0)
    bit_depth: Range = Range(16, 16)

    @classmethod
    def dataset_defaults(cls) -> "DegradationConfig":
        """The ranges ``factory generate`` uses without ``--degradation``: a dataset should cover a
        range of imaging conditions, so signal (``photons`` log-uniform 100-3000), background
        (0-30 photons per LR pixel) and PSF width (85-110 nm, ~ NA 1.3-1.49 at 670 nm) vary per
        sample; the camera stays fixed (QE 0.8, read noise 1.6 e-, gain 0.5 e-/ADU, offset 100 ADU,
        16 bit). The plain constructor keeps single fixed values (``factory degrade``)."""
        return cls(photons=Range(100.0, 3000.0, log=True), background_photons=Range(0.0, 30.0),
                   psf_sigma_nm=Range(85.0, 110.0))

    def __post_init__(self) -> None:
        if isinstance(self.downsample, (list, tuple, dict, Range)):
            raise FactoryError("downsample must be one integer for the whole run (it fixes the LR array shape), not a range.")
        check_value("downsample", self.downsample)
        object.__setattr__(self, "downsample", int(self.downsample))
        object.__setattr__(self, "psf_model", parse_psf_model(self.psf_model))
        object.__setattr__(self, "photon_scale", parse_photon_scale(self.photon_scale))
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_FIELDS:
                object.__setattr__(self, name, Range.parse(name, value))
        if (self.na is None) != (self.wavelength_nm is None):
            raise FactoryError("na and wavelength_nm must be given together (or neither).")
        if self.na is not None and self.psf_sigma_nm is not None:
            raise FactoryError("give either psf_sigma_nm or na with wavelength_nm, not both.")
        if self.na is None and self.psf_sigma_nm is None:
            object.__setattr__(self, "psf_sigma_nm", Range(DEFAULT_PSF_SIGMA_NM, DEFAULT_PSF_SIGMA_NM))
        check_offset_fits(self.offset_adu.high, self.bit_depth.low)

    def draw(self, rng: np.random.Generator) -> DegradationParams:
        """One sample's parameters. Always consumes the same draws from rng, fixed or not, so
        that fixing one parameter never shifts another's value or the noise that follows."""
        u = rng.random(len(RANGE_FIELDS))  # (len(RANGE_FIELDS),) one uniform per range field, in order
        background_seed = int(rng.integers(0, 2**63 - 1))
        v = {name: (None if getattr(self, name) is None else getattr(self, name).sample(ui, name in INTEGER_FIELDS))
             for name, ui in zip(RANGE_FIELDS, u)}
        if v["na"] is not None:
            v["psf_sigma_nm"] = sigma_from_na_nm(v["wavelength_nm"], v["na"])
        return DegradationParams(**v, background_seed=background_seed, psf_model=self.psf_model, downsample=self.downsample,
                                 photon_scale=self.photon_scale)

    def to_dict(self) -> dict:
        """JSON-safe dict (goes into the store's run spec); from_dict(to_dict()) == self."""
        d = {"schema_version": SCHEMA_VERSION, "downsample": self.downsample, "psf_model": self.psf_model.value}
        if self.photon_scale is not PhotonScale.PEAK:  # the default is implied (specs made before the field compare equal)
            d["photon_scale"] = self.photon_scale.value
        for name in RANGE_FIELDS:
            value = getattr(self, name)
            d[name] = None if value is None else value.to_json()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DegradationConfig":
        """Validate (hand-written checks, then the JSON Schema) and build; null means 'not given'."""
        fields_given = schemas.check_config_dict(d, SCHEMA_VERSION, {f.name for f in fields(cls)}, "degradation config")
        cfg = cls(**fields_given)
        schemas.validate_config(d, "degradation.v1.json", "degradation config")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "DegradationConfig":
        """Read a .json or .toml config file and validate it."""
        d = schemas.read_config_file(path, "degradation config")
        try:
            return cls.from_dict(d)
        except FactoryError as exc:
            raise FactoryError(f"{path}: {exc}") from None
