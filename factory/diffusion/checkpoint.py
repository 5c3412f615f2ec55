"""Checkpoints: weights plus the full model and schedule config in one safetensors file.

Layout: tensors = the network's state dict (EMA weights for a finished model);
metadata (strings only) = ``format`` (which kind of model: :class:`ModelKind`,
"factory-ddpm" or "factory-sr3"), ``format_version``, ``model`` (JSON of the kind's
config: :class:`ModelConfig` or :class:`~factory.diffusion.conditional.ConditionalConfig`)
and ``card`` (JSON: training provenance, data attribution, quality numbers). Loading
parses JSON and tensors only: no code runs. The model id is the SHA-256 of the file bytes.

Loading trusts nothing it has not checked: the config is bounded before any network
is built (a crafted ``base_channels=1e7`` is one sentence, not an allocation error),
the pixel size must be positive, and every weight must be finite.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from factory.diffusion.conditional import ConditionalConfig, ConditionalUNet
from factory.diffusion.kinds import ModelKind
from factory.diffusion.schedule import ScheduleConfig
from factory.diffusion.unet import UNet, UNetConfig
from factory.errors import FactoryError
from factory.files import atomic_write


FORMAT = ModelKind.ddpm.value  # the unconditional kind's format string, as older code names it
FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.safetensors"


@dataclass(frozen=True)
class X0Prior:
    """Where the eps network's x0 estimate is worse than knowing nothing, and what to use instead.

    x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) multiplies the network's eps error by
    1 / sqrt(a_t): 4e4 at t = T-1 of the cosine schedule (a = 6e-10), where a 0.03 eps
    error puts x0 off by ~1e3. Clipping that to [-1, 1] leaves random +-1 pixels
    with mean 0, far above the mean of sparse fluorescence data (~ -0.88), and the
    sampler carries that brightness into the image. Below ``below_abar`` the
    samplers use ``mean`` instead: the mean of the training patches, which is the
    MMSE estimate of x0 as the signal-to-noise ratio goes to zero.
    ``below_abar`` is measured on held-out patches when the checkpoint is written
    (:func:`factory.diffusion.train.calibrate_x0_prior`).
    """

    mean: float  # mean training pixel in model units [-1, 1]
    below_abar: float  # use ``mean`` as x0 where abar_t < this

    def to_dict(self) -> dict:
        return {"mean": self.mean, "below_abar": self.below_abar}

    def check(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.below_abar) and 0.0 <= self.below_abar <= 1.0):
            raise FactoryError(f"the x0 prior must be finite with below_abar in [0, 1], got {self.to_dict()}.")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and use a trained model."""

    unet: UNetConfig
    schedule: ScheduleConfig
    hr_pixel_nm: float  # pixel size of the images the model was trained on (and generates)
    # Training images were scaled to [0, 1] (per image, 99.9th percentile -> 1, clipped),
    # then mapped to [-1, 1]. Samples are mapped back to [0, 1] "normalized density".
    x0_prior: X0Prior | None = None  # None: the samplers always use the network's x0 (older checkpoints)

    kind = ModelKind.ddpm

    def check(self) -> None:
        """FactoryError unless the config describes a sane network and a positive pixel size."""
        self.unet.check()
        self.schedule.check()
        if not (isinstance(self.hr_pixel_nm, (int, float)) and math.isfinite(self.hr_pixel_nm) and self.hr_pixel_nm > 0):
            raise FactoryError(f"the model's HR pixel size must be a positive number of nm, got {self.hr_pixel_nm}.")
        if self.x0_prior is not None:
            self.x0_prior.check()

    def build(self) -> UNet:
        return UNet(self.unet)

    def to_dict(self) -> dict:
        d = {"unet": self.unet.to_dict(), "schedule": self.schedule.to_dict(), "hr_pixel_nm": self.hr_pixel_nm}
        if self.x0_prior is not None:
            d["x0_prior"] = self.x0_prior.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        prior = d.get("x0_prior")
        return cls(UNetConfig.from_dict(d["unet"]), ScheduleConfig.from_dict(d["schedule"]), float(d["hr_pixel_nm"]),
                   X0Prior(float(prior["mean"]), float(prior["below_abar"])) if prior else None)


_CONFIGS: dict[ModelKind, type] = {ModelKind.ddpm: ModelConfig, ModelKind.sr3: ConditionalConfig}


@dataclass
class Checkpoint:
    model: UNet | ConditionalUNet
    config: ModelConfig | ConditionalConfig
    card: dict = field(default_factory=dict)
    model_id: str = ""  # sha256 hex of the file
    path: Path | None = None

    @property
    def kind(self) -> ModelKind:
        return self.config.kind


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(path: str | Path, model: torch.nn.Module, config: ModelConfig | ConditionalConfig, card: dict | None = None,
         dtype: torch.dtype = torch.float32) -> str:
    """Write weights + config + card atomically; returns the model id (sha256).

    The file's ``format`` is the config's kind. ``dtype=torch.float16`` halves the file
    (the shipped model); loading casts back to float32.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": config.kind.value, "format_version": str(FORMAT_VERSION),
            "model": json.dumps(config.to_dict()), "card": json.dumps(card or {}, default=str)}
    with atomic_write(path) as tmp:
        tmp.write_bytes(_canonical(safetensors.torch.save(tensors, metadata=meta)))
        tmp.chmod(0o644)
    return file_sha256(path)


def _canonical(blob: bytes) -> bytes:
    """Sort the header's metadata keys: safetensors writes them in hash-map order, which differs
    between runs, and the model id (file sha256) must only depend on weights, config and card."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8-byte alignment
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


SHIPPED = {"default": DEFAULT_MODEL, "default20": DEFAULT_MODEL.with_name("default20.safetensors"),
           "smlm": DEFAULT_MODEL.with_name("smlm.safetensors")}  # name -> file in the package


def resolve(model: str | Path) -> Path:
    """``default`` -> the shipped DDPM (40 nm), ``default20`` -> its 20 nm fine-tune, ``smlm`` -> the shipped
    conditional model; anything else is a path."""
    return SHIPPED.get(str(model), Path(model))


def load(model: str | Path = "default", device: str | torch.device = "cpu", kind: ModelKind = ModelKind.ddpm) -> Checkpoint:
    """Load a checkpoint of the given kind; any problem with the file becomes one FactoryError sentence."""
    path = resolve(model)
    if not path.is_file():
        hint = f" (the shipped '{model}' model is not in this install)" if path in SHIPPED.values() else ""
        raise FactoryError(f"{path}: no such checkpoint file{hint}.")
    kinds = {k.value: k for k in ModelKind}
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") not in kinds:
                raise FactoryError(f"{path}: not a factory checkpoint (no '{FORMAT}' or '{ModelKind.sr3.value}' metadata).")
            found = kinds[meta["format"]]
            if found is not kind:
                raise FactoryError(f"{path} is {found.use}, but this needs {kind.use}.")
            if int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise FactoryError(f"{path}: checkpoint format version {meta['format_version']} is newer than this factory supports ({FORMAT_VERSION}); upgrade factory.")
            state = {k: f.get_tensor(k) for k in f.keys()}
        config = _CONFIGS[kind].from_dict(json.loads(meta["model"]))
        card = json.loads(meta.get("card", "{}"))
    except FactoryError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated / garbage files
        raise FactoryError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}).") from None
    try:
        config.check()
    except FactoryError as exc:
        raise FactoryError(f"{path}: {exc}") from None
    net = config.build()
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise FactoryError(f"{path}: weights do not match the model config stored in the file.") from None
    # checked in float32 after loading (isfinite on the file's float16 is several times slower on CPUs)
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise FactoryError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}); the model is unusable.")
    net.to(device).eval().requires_grad_(False)
    return Checkpoint(net, config, card, file_sha256(path), path)
