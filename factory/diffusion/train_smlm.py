"""Train the conditional (SR3-style) model on (SMLM frame, KDE) pairs; resumable like the DDPM.

The resolver (:func:`resolve`) checks the settings and fixes the model config from the
data source's geometry; the loss (:func:`smlm_loss`) draws a batch of pairs, one of the 8
flips/rotations and a square crop per pair from the training generator, then noise
levels and eps (:func:`factory.diffusion.conditional.conditional_loss`); state, steps,
EMA, checkpoints and the stop at a non-finite loss are :mod:`factory.diffusion.training`'s,
as for the DDPM. When a session ends (all steps done, or ``max_minutes``), the inference
schedule is chosen on the held-out source (:mod:`factory.diffusion.schedule_search`) and
written into the checkpoint with the search table in its card; checkpoints written before
carry SR3's default 100-step schedule and say so (``card["inference_schedule"]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from factory.device import pick_device
from factory.diffusion import checkpoint, schedule_search, training
from factory.diffusion.conditional import ConditionalConfig, conditional_loss, noise_level_table
from factory.diffusion.kinds import ModelKind
from factory.diffusion.smlm_data import SmlmSource
from factory.diffusion.training import LoopConfig, state_path
from factory.diffusion.unet import PRESETS
from factory.errors import FactoryError

SCALE_FRAMES = 64  # training pairs whose photo-electrons set electrons_scale and whose KDEs set y0_mean


@dataclass
class SmlmTrainConfig:
    out: str
    preset: str = "small"
    crop_lr: int | None = None  # square LR crop side per training pair, px (None: the largest square in the frame)
    steps: int = 20000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    max_minutes: float | None = None
    device: str = "auto"
    bf16: bool = False
    electrons_scale: float | None = None  # None: the 99.9th percentile of the first 64 training frames' photo-electrons
    search: schedule_search.SearchConfig = field(default_factory=schedule_search.SearchConfig)
    card: dict = field(default_factory=dict)

    @property
    def loop(self) -> LoopConfig:
        return LoopConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                          ema_decay=self.ema_decay, seed=self.seed, checkpoint_every=self.checkpoint_every,
                          max_minutes=self.max_minutes, bf16=self.bf16)


def _pair_arrays(source: SmlmSource, i: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair i as (frame (h, w), kde (h k, w k)) float32, checked: finite, shapes consistent."""
    pair = source[i]
    frame, kde = np.asarray(pair.frame_e, np.float32), np.asarray(pair.kde, np.float32)
    if frame.ndim != 2 or kde.shape != (frame.shape[0] * k, frame.shape[1] * k):
        raise FactoryError(f"training pair {i}: frame {frame.shape} and KDE {kde.shape} do not fit an upscale of {k}.")
    if not (np.isfinite(frame).all() and np.isfinite(kde).all()):
        raise FactoryError(f"training pair {i} holds NaN or infinite values; training needs finite data.")
    return frame, kde


def resolve(cfg: SmlmTrainConfig, train: SmlmSource) -> ConditionalConfig:
    """The config resolver: every setting checked (one sentence each), the model config fixed from the data."""
    if cfg.preset not in PRESETS:
        raise FactoryError(f"unknown preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}.")
    cfg.loop.check()
    if len(train) == 0:
        raise FactoryError("the training data holds no pairs.")
    geometry = train.geometry
    geometry.check()
    k = geometry.upscale
    frame, _ = _pair_arrays(train, 0, k)
    crop = cfg.crop_lr or min(frame.shape)
    unet = PRESETS[cfg.preset]
    side = crop * k
    if not 1 <= crop <= min(frame.shape) or side % unet.size_multiple:
        raise FactoryError(f"--crop-lr must be between 1 and {min(frame.shape)} px with crop x {k} a multiple of "
                           f"{unet.size_multiple} (preset {cfg.preset}), got {crop}.")
    unet = replace(unet, image_size=side, attention_resolutions=tuple(r * side // unet.image_size for r in unet.attention_resolutions))
    first = [_pair_arrays(train, i, k) for i in range(min(SCALE_FRAMES, len(train)))]  # checked: finite, shapes
    scale = cfg.electrons_scale
    if scale is None:
        p999 = float(np.percentile(np.stack([f for f, _ in first]), 99.9))
        scale = p999 if p999 > 0 else 1.0
    if not (math.isfinite(scale) and scale > 0):
        raise FactoryError(f"--electrons-scale must be a positive number of photo-electrons, got {scale}.")
    model_cfg = ConditionalConfig(unet, geometry, scale)
    y0_mean = float(np.mean([model_cfg.to_model(torch.from_numpy(kde)).mean() for _, kde in first]))
    model_cfg = replace(model_cfg, y0_mean=y0_mean)
    model_cfg.check()
    return model_cfg


def smlm_loss(train: SmlmSource, model_cfg: ConditionalConfig, batch_size: int, device: torch.device) -> training.LossFn:
    """L_simple on ``batch_size`` pairs: draws pair ids, flips/rotations, crop corners (from ``gen``), then gamma and eps."""
    k, crop = model_cfg.geometry.upscale, model_cfg.unet.image_size // model_cfg.geometry.upscale
    table = noise_level_table(model_cfg.train_schedule)  # (T + 1,) float64

    def loss(net: torch.nn.Module, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch_size,), generator=gen).tolist()
        turns = torch.randint(8, (batch_size,), generator=gen).tolist()
        corners = torch.rand(batch_size, 2, generator=gen, dtype=torch.float64).tolist()
        frames, kdes = [], []
        for i, turn, (u, v) in zip(idx, turns, corners):
            frame, kde = _pair_arrays(train, i, k)
            r0, c0 = int(u * (frame.shape[0] - crop + 1)), int(v * (frame.shape[1] - crop + 1))
            frame, kde = frame[r0:r0 + crop, c0:c0 + crop], kde[r0 * k:(r0 + crop) * k, c0 * k:(c0 + crop) * k]
            frames.append(_dihedral(frame, turn))
            kdes.append(_dihedral(kde, turn))
        return conditional_loss(net, model_cfg, table, torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(kdes)),
                                gen, device)

    return loss


def _dihedral(x: np.ndarray, turn: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square (S, S) array, the same one for the frame and its KDE."""
    x = np.rot90(x, turn % 4)
    return np.ascontiguousarray(x[:, ::-1] if turn >= 4 else x)


def train_smlm(cfg: SmlmTrainConfig, train: SmlmSource, holdout: SmlmSource, console=None) -> Path:
    """Train (or resume) the conditional model; returns the checkpoint path."""
    model_cfg = resolve(cfg, train)
    out = Path(cfg.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FactoryError(f"cannot create {out.parent}: {exc.strerror}.") from None
    device = pick_device(cfg.device)
    loop = cfg.loop
    state = training.TrainingState(model_cfg.build, loop, device)
    state.resume(state_path(out), model_cfg.to_dict())
    card = {**cfg.card, "preset": cfg.preset, "crop_lr": model_cfg.unet.image_size // model_cfg.geometry.upscale,
            "train_pairs": len(train), "holdout_pairs": len(holdout), "batch_size": cfg.batch_size, "lr": cfg.lr,
            "ema_decay": cfg.ema_decay, "seed": cfg.seed, "device": str(device),
            "train_schedule": model_cfg.train_schedule.to_dict(), "electrons_scale": model_cfg.electrons_scale}

    def write_checkpoint(ema: torch.nn.Module, final: bool) -> None:
        checkpoint.save(out, ema, model_cfg, {**card, "steps": state.step, "train_wall_s": round(state.wall_s, 1),
                                              "final": final, "inference_schedule": "default (no search yet)"})

    if state.step < cfg.steps:
        training.run(state, loop, smlm_loss(train, model_cfg, cfg.batch_size, device), device, out, model_cfg.to_dict(),
                     write_checkpoint, console)
    elif out.is_file() and "schedule_search" in checkpoint.load(out, kind=ModelKind.sr3).card:
        return out  # complete and searched: nothing to do
    ema = state.ema.eval()

    def report(i: int, n: int, row: dict) -> None:
        if console is not None:
            console.print(f"schedule search {i}/{n}: {row['sampler']} x{row['steps']}, final gamma {row['final_gamma']:g}: "
                          f"Jaccard {row['jaccard']:.3f}, RMSE {row['rmse_lateral_nm']:.1f} nm, {row['seconds']:.0f} s",
                          highlight=False, markup=False)

    schedule, sampler, rows = schedule_search.search(ema, model_cfg, holdout, cfg.search, device, cfg.bf16, on_row=report)
    checkpoint.save(out, ema, replace(model_cfg, inference=schedule, sampler=sampler),
                    {**card, "steps": state.step, "train_wall_s": round(state.wall_s, 1), "final": state.step >= cfg.steps,
                     "inference_schedule": "searched on held-out data", "schedule_search": rows})
    ema.train()
    return out
