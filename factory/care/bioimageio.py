"""Export a trained CARE model as a bioimage.io model package (``factory care export-bioimageio``).

The package (a .zip made by ``bioimageio.spec.save_bioimageio_package``, format 0.5) runs in the
tools microscopists use (bioimage.io's deepImageJ, ilastik, bioimageio.core):

- **weights**: TorchScript (no Python code needed) of the LR -> HR model: bilinear upsampling by
  k (``align_corners=False``, as in training) followed by the U-Net;
- **input** ``lr``: (batch, channel, y, x) float32 camera frames at the training LR pixel (y and
  x sizes any multiple of 2**depth / gcd(k, 2**depth)), normalized by the package's own
  preprocessing: ``scale_range`` over (y, x) with the training percentiles (1, 99.8) for a
  percentile model (CSBDeep's normalization; bioimage.io adds eps = 1e-6 to the range, ours
  1e-20: a relative difference below 1e-8 for frames of more than 1 ADU range), or
  ``scale_linear`` with the training camera's gain / scale_e and -offset gain / scale_e for a
  camera model (then only for that camera, written in the description);
- **output** ``hr``: normalized density on the HR grid (pixel = LR pixel / k);
- **test tensors**: a held-out LR frame of the training store and the output this package's
  pipeline (:func:`factory.care.transform.model_input`, the network) gives for it;
- documentation, a cover (input | output), the CARE citation, the training provenance in ``config``.

The description is checked by ``bioimageio.spec.load_model_description`` with ``perform_io_checks``
(file hashes, test tensor shapes against the axes); it touches no network (tests/test_care.py
runs it with sockets refused). bioimageio.spec cannot run the weights (that is bioimageio.core,
which pulls in more than this project installs); the test runs the TorchScript itself instead.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from factory.care.checkpoint import CareModel
from factory.care.transform import InputNorm, model_input
from factory.errors import FactoryError

CARE_DOI = "10.1038/s41592-018-0216-7"


@dataclass(frozen=True)
class ExportConfig:
    out: Path  # .zip
    store: str | None = None  # test pair source (default: the training store recorded in the model)
    name: str | None = None
    author: str = "factory user"


class Packaged(torch.nn.Module):
    """Normalized LR (B, 1, h, w) -> HR (B, 1, k h, k w): the upsampling of training, then the U-Net."""

    def __init__(self, net: torch.nn.Module, k: int):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=float(self.k), mode="bilinear", align_corners=False)
        return self.net(up)


def _test_pair(model: CareModel, store_path: str) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """A held-out LR frame (1, 1, h, w) float32 ADU, the pipeline's output for it (1, 1, H, W), its camera."""
    from factory.normalize import CAMERA_FIELDS
    from factory.store import Store

    store = Store.open(store_path)
    if round(store.spec.lr_pixel_nm, 6) != round(model.lr_pixel_nm, 6):
        raise FactoryError(f"{store_path} has {store.spec.lr_pixel_nm:g} nm LR pixels, the model {model.lr_pixel_nm:g} nm; "
                           f"take the test pair from its training store.")
    held = model.training.get("val_shards") or [store.committed_shards()[-1]]
    i = store.shard_slice(int(held[0])).start
    lr = store.read_samples("lr", [i]).astype(np.float32)  # (1, h, w) ADU, checked
    row = store.manifest(["sample_id", *CAMERA_FIELDS]).to_pylist()
    camera = next({k: np.asarray([r[k]]) for k in CAMERA_FIELDS} for r in row if r["sample_id"] == i)
    with torch.no_grad():
        out = model.net(model_input(lr, model.transform, camera)).numpy()  # (1, 1, H, W)
    return lr[None], out.astype(np.float32), camera


def _cover(lr: np.ndarray, hr: np.ndarray, path: Path) -> None:
    """input | output side by side, each stretched to its 0.5-99.5 % range, LR enlarged to the HR size."""
    from PIL import Image

    def stretch(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, (0.5, 99.5))
        return (np.clip((a - lo) / (hi - lo + 1e-12), 0, 1) * 255).astype(np.uint8)

    k = hr.shape[0] // lr.shape[0]
    side = np.concatenate([stretch(np.kron(lr, np.ones((k, k)))), np.full((hr.shape[0], 4), 255, np.uint8), stretch(hr)], axis=1)
    scale = max(1, 256 // side.shape[0])
    Image.fromarray(side).resize((side.shape[1] * scale, side.shape[0] * scale), Image.NEAREST).save(path)


def export(model: CareModel, cfg: ExportConfig) -> str:
    """Write the package to ``cfg.out`` and validate it; returns the validation status ("valid-format" or "passed")."""
    try:
        from bioimageio.spec import load_model_description, save_bioimageio_package
        from bioimageio.spec.model import v0_5 as bio
    except ImportError:
        raise FactoryError("bioimage.io export needs the bioimageio.spec package: pip install 'factory[bioimageio]'.") from None
    out = Path(cfg.out)
    if out.suffix.lower() != ".zip":
        raise FactoryError(f"{out}: a bioimage.io package is a .zip file; name it *.zip.")
    store = cfg.store or model.training.get("store")
    if not store:
        raise FactoryError("the model records no training store; pass --store with a store of the same pixel sizes.")
    lr, hr, camera = _test_pair(model, str(store))  # a store that is gone or differs is refused there, in one sentence
    k, mult = model.transform.downsample, model.network.multiple
    step = mult // math.gcd(k, mult)
    name = cfg.name or (f"factory CARE {model.path.stem}" if model.path else "factory CARE")
    t = model.transform
    if t.norm is InputNorm.percentile:
        pre = [bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(axes=[bio.AxisId("y"), bio.AxisId("x")],
                                                                min_percentile=t.percentiles[0], max_percentile=t.percentiles[1]))]
        norm_text = f"per image, percentiles {t.percentiles[0]:g} / {t.percentiles[1]:g} % -> 0 / 1"
    else:
        gain = float(camera["gain_e_per_adu"][0] / camera["em_gain"][0] / t.scale_e)
        pre = [bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=-float(camera["offset_adu"][0]) * gain))]
        norm_text = (f"photo-electrons / {t.scale_e:.4g} for the training camera (offset {float(camera['offset_adu'][0]):g} ADU, "
                     f"{float(camera['gain_e_per_adu'][0]):g} e-/ADU); another camera needs its own preprocessing")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.save(d / "test_input.npy", lr)
        np.save(d / "test_output.npy", hr)
        import tifffile

        tifffile.imwrite(d / "sample_input.tif", lr[0, 0])  # sample tensors: images a viewer opens (FAIR)
        tifffile.imwrite(d / "sample_output.tif", hr[0, 0])
        _cover(lr[0, 0], hr[0, 0], d / "cover.png")
        packaged = Packaged(model.net.cpu().eval(), k).eval()
        with torch.no_grad():
            traced = torch.jit.trace(packaged, torch.zeros(1, 1, 2 * step * 4, 2 * step * 4))
        traced.save(str(d / "weights.pt"))
        doc = d / "README.md"
        doc.write_text(f"# {name}\n\nCARE restoration (Weigert et al. 2018) trained with `factory care train` on synthetic "
                       f"LR/HR pairs of a factory store.\n\n- input: widefield camera frame (ADU) at {model.lr_pixel_nm:g} nm "
                       f"pixels; normalization: {norm_text}\n- output: normalized density at {model.hr_pixel_nm:g} nm pixels "
                       f"(x{k})\n- training: {model.training}\n\n# Validation\n\nHeld-out shards of the training store "
                       f"(never trained on): {model.metrics} (PSNR in dB against the HR density; FRC at the 1/7 threshold "
                       f"in nm). Score a restoration of real data against a super-resolution reference with "
                       f"`factory evaluate RESTORED.tif --reference SR.tif`.\n")
        space_in = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=mult, step=step),
                                       scale=model.lr_pixel_nm / 1000.0, unit="micrometer") for a in ("y", "x")]
        space_out = [bio.SpaceOutputAxis(id=bio.AxisId(a), size=bio.SizeReference(tensor_id=bio.TensorId("lr"), axis_id=bio.AxisId(a)),
                                         scale=model.hr_pixel_nm / 1000.0, unit="micrometer") for a in ("y", "x")]
        descr = bio.ModelDescr(
            name=name, description=f"CARE restoration of widefield frames ({model.lr_pixel_nm:g} nm) to {model.hr_pixel_nm:g} nm "
                                   f"density, trained on synthetic pairs made by factory.",
            authors=[bio.Author(name=cfg.author)], cite=[bio.CiteEntry(text="Weigert et al. 2018, Content-aware image restoration",
                                                                       doi=bio.Doi(CARE_DOI))],
            license=bio.LicenseId("CC-BY-4.0"), documentation=bio.FileDescr(source=doc), covers=[bio.FileDescr(source=d / "cover.png")],
            inputs=[bio.InputTensorDescr(id=bio.TensorId("lr"), description="widefield frame, camera ADU",
                                         axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("lr")]), *space_in],
                                         test_tensor=bio.FileDescr(source=d / "test_input.npy"),
                                         sample_tensor=bio.FileDescr(source=d / "sample_input.tif"),
                                         data=bio.IntervalOrRatioDataDescr(type="float32"), preprocessing=pre)],
            outputs=[bio.OutputTensorDescr(id=bio.TensorId("hr"), description="restored normalized density",
                                           axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("hr")]), *space_out],
                                           test_tensor=bio.FileDescr(source=d / "test_output.npy"),
                                           sample_tensor=bio.FileDescr(source=d / "sample_output.tif"),
                                           data=bio.IntervalOrRatioDataDescr(type="float32"))],
            weights=bio.WeightsDescr(torchscript=bio.TorchscriptWeightsDescr(
                source=d / "weights.pt", pytorch_version=bio.Version(torch.__version__.split("+")[0]))),
            tags=["care", "denoising", "super-resolution", "widefield", "factory"],
            config={"factory": {"transform": t.to_dict(), "training": model.training, "metrics": model.metrics}},
        )
        tmp_zip = out.with_name(out.name + ".tmp.zip")
        try:
            save_bioimageio_package(descr, output_path=tmp_zip)
            tmp_zip.replace(out)
        finally:
            tmp_zip.unlink(missing_ok=True)
    loaded = load_model_description(out, perform_io_checks=True)
    status = loaded.validation_summary.status
    if status not in ("passed", "valid-format"):
        raise FactoryError(f"{out}: bioimage.io validation {status}: {loaded.validation_summary.format()[:500]}")
    return status
