"""The ``images`` structure source: random patches of the user's own HR images.

Each TIFF (2-D or a stack; folders are expanded) is read once, sum-binned by the integer factor
``hr_pixel_nm / image pixel`` and scaled like a training image (:func:`factory.images.normalize_unit`:
the 99.9th percentile -> 1, clipped to [0, 1]). Sample i then takes, from its own generator
``factory.seeding.structure_rng(seed, i)``: an image (probability proportional to its number of
patch positions, so every position is equally likely), a top-left corner, and one of the 8
flips/rotations. The source id hashes the files' SHA-256s, pixel sizes and patch size, so a store
is resumed only with the same images.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from factory import images
from factory.errors import FactoryError
from factory.structures.config import Resolved, StructureConfig, sha256_json


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_images(files: list[str], pixel_nm: float | None, hr_pixel_nm: float) -> list[np.ndarray]:
    """The images on the HR grid, each (Hk, Wk) float32 in [0, 1] (every frame of a stack is one image)."""
    out = []
    for path in map(Path, files):
        stack = images.read_stack(path)
        src_nm = stack.pixel_nm or pixel_nm
        if src_nm is None:
            raise FactoryError(f"{path}: pixel size unknown; pass --images-pixel-nm.")
        k = images.binning_factor(hr_pixel_nm, src_nm, path)
        data = stack.data
        if not np.isfinite(data).all():
            raise FactoryError(f"{path}: contains NaN or infinite pixels.")
        for frame in images.bin_sum(data, k):
            out.append(images.normalize_unit(frame)[0])
    return out


def resolve_images(cfg: StructureConfig, hr_size: int | None, hr_pixel_nm: float | None, multiple: int) -> Resolved:
    if not cfg.images:
        raise FactoryError("--structure images needs --images FILE_OR_FOLDER (the HR images to cut patches from).")
    files = [str(p.resolve()) for p in images.find_tiffs(list(cfg.images))]
    first = images.read_stack(files[0])
    src_nm = first.pixel_nm or cfg.images_pixel_nm
    if src_nm is None:
        raise FactoryError(f"{files[0]}: pixel size unknown; pass --images-pixel-nm.")
    pixel = float(hr_pixel_nm) if hr_pixel_nm is not None else float(src_nm)  # default: the images' own grid
    loaded = load_images(files, cfg.images_pixel_nm, pixel)
    smallest = min(min(img.shape) for img in loaded)
    size = hr_size if hr_size is not None else min(64, smallest - smallest % multiple)
    if size < multiple or size % multiple:
        raise FactoryError(f"--hr-size must be a positive multiple of {multiple} px, got {size}.")
    if size > smallest:
        raise FactoryError(f"--hr-size {size} px is larger than the smallest image ({smallest} px after binning to {pixel:g} nm).")
    sources = [{"name": Path(f).name, "sha256": file_sha256(Path(f))} for f in files]
    structure = {"kind": "images", "id": sha256_json({"files": sorted(s["sha256"] for s in sources), "hr_pixel_nm": pixel,
                                                      "hr_size": size, "images_pixel_nm": cfg.images_pixel_nm}),
                 "files": sources, "paths": files, "pixel_nm": pixel}
    if cfg.images_pixel_nm is not None:
        structure["images_pixel_nm"] = float(cfg.images_pixel_nm)
    card = {"name": "patches of the user's HR images", "files": [s["name"] for s in sources], "images": len(loaded),
            "hr_pixel_nm": pixel}
    return Resolved(structure, card, int(size), pixel)


class ImageSource:
    """Draws sample i's patch (see the module docstring)."""

    def __init__(self, structure: dict, hr_size: int):
        paths = structure["paths"]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FactoryError(f"{missing[0]}: image file not found on this node (--structure images needs the files "
                               f"on every node, or run on one machine).")
        self._setup(load_images(paths, structure.get("images_pixel_nm"), structure["pixel_nm"]), hr_size)

    @classmethod
    def from_images(cls, loaded: list[np.ndarray], hr_size: int) -> "ImageSource":
        """From images already on the HR grid (what the driver ships through Ray's object store)."""
        source = cls.__new__(cls)
        source._setup(loaded, hr_size)
        return source

    def _setup(self, loaded: list[np.ndarray], hr_size: int) -> None:
        self.images, self.size = loaded, hr_size
        positions = np.array([(h - hr_size + 1) * (w - hr_size + 1) for h, w in (im.shape for im in self.images)], np.float64)
        self.weights = positions / positions.sum()

    def make(self, ids, run_seed: int) -> np.ndarray:
        from factory.seeding import structure_rng

        S = self.size
        out = np.empty((len(ids), S, S), np.float32)  # (B, S, S)
        for j, i in enumerate(ids):
            rng = structure_rng(run_seed, i)
            img = self.images[int(rng.choice(len(self.images), p=self.weights))]
            y, x = int(rng.integers(img.shape[0] - S + 1)), int(rng.integers(img.shape[1] - S + 1))
            view = int(rng.integers(8))
            out[j] = images.dihedral8(img[y:y + S, x:x + S])[view]
        return out
