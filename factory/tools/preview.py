"""``factory preview``: a PNG montage of LR/HR pairs to look at a store.

Each pair is shown as two tiles side by side: the LR camera frame upsampled (nearest) to the HR
grid, and the HR image, both enlarged by the same integer factor (nearest) to about ``tile_px``.
Each image is contrast-stretched on its own to its (0.5, 99.5) percentiles, so brightness is NOT
comparable between tiles (the LR photon level is in the label). Every tile carries a scale bar
(a "nice" length near a quarter of the field of view, in µm) and the caption gives the pixel
sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from factory import query
from factory.errors import FactoryError
from factory.files import atomic_write
from factory.store import Store

STRETCH_PERCENTILES = (0.5, 99.5)
BACKGROUND, FOREGROUND, PAD = (24, 24, 24), (235, 235, 235), 8


@dataclass(frozen=True)
class PreviewConfig:
    n: int = 8  # pairs shown: the first n (by sample_id) that match ``where``
    where: str | None = None  # SQL condition on manifest columns
    pairs_per_row: int = 4
    tile_px: int = 160  # displayed tile side is the HR side times the smallest integer factor reaching this


def stretch(image: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W) uint8 with the (0.5, 99.5) percentiles mapped to 0 and 255."""
    lo, hi = np.percentile(image, STRETCH_PERCENTILES)
    scaled = (image.astype(np.float64) - lo) / (hi - lo) if hi > lo else np.zeros(image.shape)
    return (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)


def nice_length_nm(field_nm: float) -> float:
    """A 1-2-5 length near a quarter of the field of view (nm)."""
    target = field_nm / 4
    decade = 10 ** math.floor(math.log10(target))
    return max(m * decade for m in (1, 2, 5) if m * decade <= target)


def _font(size: int) -> tuple[ImageFont.FreeTypeFont, str]:
    """DejaVu Sans (has the µ glyph) where installed, else Pillow's built-in font, which lacks µ: then "um"."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), "µm"
    except OSError:
        return ImageFont.load_default(size=size), "um"


def format_length(nm: float, micron: str = "µm") -> str:
    return f"{nm / 1000:g} {micron}" if nm >= 100 else f"{nm:g} nm"


def _scale_bar(draw: ImageDraw.ImageDraw, x0: int, y0: int, side: int, bar_px: float, label: str, font) -> None:
    """A white bar with a dark outline and its length, in the bottom right corner of a tile at (x0, y0)."""
    thick = max(3, side // 40)
    x1, y1 = x0 + side - PAD, y0 + side - PAD
    draw.rectangle([x1 - bar_px - 1, y1 - thick - 1, x1 + 1, y1 + 1], fill=(0, 0, 0))
    draw.rectangle([x1 - bar_px, y1 - thick, x1, y1], fill=(255, 255, 255))
    w = draw.textlength(label, font=font)
    draw.text((x1 - bar_px / 2 - w / 2, y1 - thick - 4), label, font=font, fill=(255, 255, 255), anchor="ls",
              stroke_width=2, stroke_fill=(0, 0, 0))


@dataclass
class Tile:
    tag: str
    image: np.ndarray  # (H, W) on the HR grid
    marks: np.ndarray | None = None  # (m, 2) x, y in HR pixels: true emitters, drawn as circles


def _upsample(img: np.ndarray, k: int) -> np.ndarray:
    return np.kron(img.astype(np.float32), np.ones((k, k), np.float32))  # (H, W) nearest


def pair_tiles(store: Store, ids: np.ndarray) -> tuple[list[str], list[list[Tile]]]:
    """pairs: LR (upsampled, nearest) beside HR; labelled with the signal photons."""
    k = store.spec.hr_size // store.spec.lr_size
    lr_all, hr_all = store.read_samples("lr", ids), store.read_samples("hr", ids)  # checked reads
    photons = dict(zip(*store.manifest(["sample_id", "photons"]).to_pydict().values()))
    labels = [f"#{i}  {photons.get(int(i), float('nan')):.0f} photons" for i in ids]
    return labels, [[Tile("LR", _upsample(lr, k)), Tile("HR", hr)] for lr, hr in zip(lr_all, hr_all)]


def smlm_tiles(store: Store, ids: np.ndarray) -> tuple[list[str], list[list[Tile]]]:
    """smlm: the frame with the most emitters (upsampled, true emitters circled), its KDE target, the HR density."""
    spec = store.spec
    k = spec.hr_size // spec.lr_size
    frames, kde, hr = (store.read_samples(name, ids) for name in ("frames", "kde", "hr"))  # checked reads
    labels, tiles = [], []
    for j, i in enumerate(ids):
        table = store.emitters(int(i) // store.shard_size)
        rows = table.filter(pa.array(table.column("sample_id").to_numpy() == i))
        per_frame = np.bincount(rows.column("frame").to_numpy(), minlength=spec.frames)
        f = int(per_frame.argmax())
        mine = rows.filter(pa.array(rows.column("frame").to_numpy() == f))
        marks = np.column_stack([mine.column("x_nm").to_numpy(), mine.column("y_nm").to_numpy()]) / spec.hr_pixel_nm
        labels.append(f"#{i}  frame {f}: {int(per_frame[f])} emitters")
        tiles.append([Tile("frame", _upsample(frames[j, f], k), marks), Tile("KDE", kde[j, f]), Tile("HR", hr[j])])
    return labels, tiles


def montage(store: Store, cfg: PreviewConfig) -> tuple[Image.Image, list[int]]:
    """The montage image and the sample ids it shows."""
    if cfg.n < 1 or cfg.pairs_per_row < 1:
        raise FactoryError(f"--n and pairs per row must be at least 1, got {cfg.n} and {cfg.pairs_per_row}.")
    ids = [int(i) for i in query.sample_ids_where(store, cfg.where)[: cfg.n]]
    if not ids:
        what = f"match {cfg.where!r}" if cfg.where else "are committed"
        raise FactoryError(f"no samples of {store.loc} {what}; nothing to preview.")
    spec = store.spec
    H, h = spec.hr_size, spec.lr_size
    labels, tiles = (smlm_tiles if store.product == "smlm" else pair_tiles)(store, np.asarray(ids, np.int64))
    zoom = max(1, math.ceil(cfg.tile_px / H))
    side = H * zoom
    (font, um), (small, _) = _font(max(12, side // 12)), _font(max(11, side // 14))
    label_h = int(font.size * 1.6)
    cols = min(cfg.pairs_per_row, len(ids))
    rows = math.ceil(len(ids) / cols)
    group_w = len(tiles[0]) * (side + PAD) - PAD
    bar_nm = nice_length_nm(H * spec.hr_pixel_nm)
    bar_px = bar_nm / spec.hr_pixel_nm * zoom
    shown = ", ".join(map(str, ids[:16])) + (f", ... ({len(ids)} in all)" if len(ids) > 16 else "")
    camera = "frames" if store.product == "smlm" else "LR"
    lines = [f"{store.loc.root.rstrip('/').rsplit('/', 1)[-1]}: samples {shown}" + (f" where {cfg.where}" if cfg.where else ""),
             f"HR {H}x{H} px at {spec.hr_pixel_nm:g} nm; {camera} {h}x{h} px at {spec.lr_pixel_nm:g} nm, shown upsampled "
             f"x{H // h} (nearest); field of view {H * spec.hr_pixel_nm / 1000:g} {um}"
             + ("; circles: the true emitters of the frame shown" if store.product == "smlm" else ""),
             f"scale bar {format_length(bar_nm, um)}; each tile contrast-stretched to its own "
             f"{STRETCH_PERCENTILES[0]}-{STRETCH_PERCENTILES[1]} percentiles"]
    line_h = int(small.size * 1.5)
    text_w = max(small.getlength(line) for line in lines)
    width = int(max(PAD + cols * (group_w + 2 * PAD), text_w + 2 * PAD))
    height = PAD + rows * (label_h + side + 2 * PAD) + len(lines) * line_h + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, (label, group) in enumerate(zip(labels, tiles)):
        r, c = divmod(j, cols)
        x = PAD + c * (group_w + 2 * PAD)
        y = PAD + r * (label_h + side + 2 * PAD)
        draw.text((x, y), label, font=font, fill=FOREGROUND)
        for t, tile in enumerate(group):
            image = Image.fromarray(stretch(tile.image)).resize((side, side), Image.Resampling.NEAREST)
            tx = x + t * (side + PAD)
            canvas.paste(image, (tx, y + label_h))
            for mx, my in (tile.marks if tile.marks is not None else ()):
                cx, cy, rad = tx + mx * zoom, y + label_h + my * zoom, max(3, zoom * 1.5)
                draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], outline=(255, 64, 64), width=max(1, zoom // 3))
            draw.text((tx + 4, y + label_h + 2), tile.tag, font=small, fill=(255, 255, 0), stroke_width=2, stroke_fill=(0, 0, 0))
            _scale_bar(draw, tx, y + label_h, side, bar_px, format_length(bar_nm, um), small)
    y = height - PAD - len(lines) * line_h
    for line in lines:
        draw.text((PAD, y), line, font=small, fill=FOREGROUND)
        y += line_h
    return canvas, ids


def write_preview(store: Store, cfg: PreviewConfig, out: Path) -> list[int]:
    """Render and save the montage as PNG (temp file, then rename); returns the sample ids shown."""
    image, ids = montage(store, cfg)
    with atomic_write(out) as tmp:
        image.save(tmp, format="PNG")
    return ids
