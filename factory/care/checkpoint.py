"""A trained CARE model in one safetensors file: weights, and in its metadata everything apply needs.

Metadata (strings): ``format`` = ``factory-care``, ``format_version``, ``network`` (depth,
channels), ``transform`` (:class:`factory.care.transform.InputTransform`: normalization, its
percentiles or electron scale, the upsampling factor), ``pixels`` (the training store's
``hr_pixel_nm``, ``lr_pixel_nm``, ``hr_size``, ``lr_size``), ``training`` (store, steps, batch,
learning rate, seed, where) and ``metrics`` (the last held-out PSNR and FRC). Loading reads JSON
and tensors only; a file of another kind (a factory DDPM, anything else) is refused in one sentence.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from factory.care.network import CareUNet, NetworkConfig, build
from factory.care.transform import InputTransform
from factory.errors import FactoryError
from factory.files import atomic_write

FORMAT = "factory-care"
FORMAT_VERSION = 1


@dataclass
class CareModel:
    net: CareUNet
    network: NetworkConfig
    transform: InputTransform
    hr_pixel_nm: float
    lr_pixel_nm: float
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    path: Path | None = None

    def metadata(self) -> dict[str, str]:
        pixels = {"hr_pixel_nm": self.hr_pixel_nm, "lr_pixel_nm": self.lr_pixel_nm}
        return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "network": json.dumps(self.network.to_dict()),
                "transform": json.dumps(self.transform.to_dict()), "pixels": json.dumps(pixels),
                "training": json.dumps(self.training, default=str), "metrics": json.dumps(self.metrics)}


def save(model: CareModel, path: str | Path) -> Path:
    """Write atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.net.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=model.metadata())
    return path


def load(path: str | Path, device: str | torch.device = "cpu") -> CareModel:
    """Load a CARE checkpoint; a missing, corrupt or foreign file is one FactoryError sentence."""
    import safetensors

    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"{path}: no such model file.")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") == "factory-care-unet":  # jobs/train_care.py before factory.care: no pixel sizes recorded
                raise FactoryError(f"{path}: written by the former jobs/train_care.py, without the pixel sizes and normalization "
                                   f"apply needs; retrain it with `factory care train`.")
            if meta.get("format") != FORMAT:
                kind = f"a '{meta['format']}' checkpoint" if meta.get("format") else "not a factory checkpoint"
                raise FactoryError(f"{path}: {kind}, not a CARE model (train one with `factory care train`).")
            if int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise FactoryError(f"{path}: CARE format version {meta['format_version']} is newer than this factory supports; upgrade factory.")
            state = {k: f.get_tensor(k) for k in f.keys()}
        network = NetworkConfig(**json.loads(meta["network"]))
        transform = InputTransform.from_dict(json.loads(meta["transform"]))
        pixels = json.loads(meta["pixels"])
        training, metrics = json.loads(meta.get("training", "{}")), json.loads(meta.get("metrics", "{}"))
    except FactoryError:
        raise
    except Exception as exc:  # safetensors and json raise several types for truncated or garbage files
        raise FactoryError(f"{path}: not a readable safetensors model file: corrupt, truncated or another format ({type(exc).__name__}).") from None
    net = build(network)
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise FactoryError(f"{path}: weights do not match the network config stored in the file.") from None
    net.to(device).eval().requires_grad_(False)
    return CareModel(net, network, transform, float(pixels["hr_pixel_nm"]), float(pixels["lr_pixel_nm"]), training, metrics, path)
