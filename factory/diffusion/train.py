"""DDPM training (Ho et al. 2020, eq. 14: L_simple = E ||eps - eps_theta(x_t, t)||^2).

Patches with overlap and the 8 flips/rotations are cut once from the training
images; each step draws a batch of patches, timesteps t ~ U{0..T-1} and noise
from one seeded generator. This module resolves the config and the data
(:func:`resolve`) and defines the loss (:func:`ddpm_loss`); AdamW, EMA weights,
periodic checkpoints, the resumable training state (``<out>.state.pt``) and the
stop at a non-finite loss are :mod:`factory.diffusion.training`'s, shared with
the conditional model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from factory import images
from factory.render import load_training_image
from factory.device import pick_device
from factory.diffusion import checkpoint, training
from factory.diffusion.samplers import EpsDenoiser
from factory.diffusion.schedule import MAX_TIMESTEPS, ScheduleConfig, Spacing, alphas_cumprod, timesteps
from factory.diffusion.training import LoopConfig, state_path  # noqa: F401  (state_path: re-exported for callers)
from factory.diffusion.unet import PRESETS, UNet
from factory.errors import FactoryError


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    preset: str = "small"
    steps: int = 20000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    patch_size: int | None = None  # default: the preset's image_size
    patch_stride: int | None = None  # default: patch_size // 4 (75 % overlap)
    hr_pixel_nm: float | None = None  # pixel size the model works at (after binning)
    data_pixel_nm: float | None = None  # pixel size of the input images if their metadata lacks it
    holdout_fraction: float = 0.2  # right-hand strip of every image kept out of training
    num_timesteps: int = 2000
    seed: int = 0
    checkpoint_every: int = 250
    max_minutes: float | None = None  # stop cleanly (and checkpoint) after this much wall time
    device: str = "auto"
    bf16: bool = False
    card: dict = field(default_factory=dict)  # extra model-card fields (data attribution, ...)
    init: str | None = None  # fine-tune: a new run starts from this DDPM's weights ("default" or a path)

    @property
    def loop(self) -> LoopConfig:
        return LoopConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                          ema_decay=self.ema_decay, seed=self.seed, checkpoint_every=self.checkpoint_every,
                          max_minutes=self.max_minutes, bf16=self.bf16)


@dataclass
class TrainingData:
    train: np.ndarray  # (P, S, S) float32 in [-1, 1], all 8 flips/rotations included
    holdout: np.ndarray  # (Q, S, S) float32 in [-1, 1], no augmentation
    hr_pixel_nm: float
    sources: list[str]


def prepare_data(cfg: TrainConfig, patch: int) -> TrainingData:
    """Read, bin, normalize, split (right strip held out) and cut patches."""
    stride = cfg.patch_stride or max(1, patch // 4)
    train, holdout, sources, pixel = [], [], [], None
    for path in images.find_training_files(cfg.data):
        # localization tables (.csv) are rendered straight at the HR pixel size
        stack = load_training_image(path, cfg.hr_pixel_nm or cfg.data_pixel_nm)
        if not np.isfinite(stack.data).all():
            bad = int(np.size(stack.data) - np.isfinite(stack.data).sum())
            raise FactoryError(f"{path}: {bad} of {stack.data.size} pixel values are NaN or infinite; training needs finite images.")
        src_nm = stack.pixel_nm or cfg.data_pixel_nm
        hr_nm = cfg.hr_pixel_nm or src_nm
        if src_nm is None or hr_nm is None:
            raise FactoryError(f"{path}: pixel size unknown; pass --data-pixel-nm (and --hr-pixel-nm to bin).")
        k = hr_nm / src_nm
        if abs(k - round(k)) > 1e-6 or round(k) < 1:
            raise FactoryError(f"--hr-pixel-nm {hr_nm} is not an integer multiple of the image pixel size {src_nm} nm.")
        if pixel is not None and abs(pixel - hr_nm) > 1e-6:
            raise FactoryError("training images disagree on pixel size after binning.")
        pixel = hr_nm
        for img in images.bin_sum(stack.data, int(round(k))):
            img, _ = images.normalize_unit(img)
            cut = int(round(img.shape[1] * (1 - cfg.holdout_fraction)))
            train.append(images.extract_patches(img[:, :cut], patch, stride))
            if img.shape[1] - cut >= patch:
                holdout.append(images.extract_patches(img[:, cut:], patch, patch // 2))
        sources.append(path.name)
    tr = images.dihedral8(np.concatenate(train)).reshape(-1, patch, patch) * 2 - 1
    ho = np.concatenate(holdout) * 2 - 1 if holdout else np.zeros((0, patch, patch), np.float32)
    return TrainingData(tr.astype(np.float32), ho.astype(np.float32), float(pixel), sources)


@torch.no_grad()
def calibrate_x0_prior(net: torch.nn.Module, schedule: ScheduleConfig, patches: np.ndarray, data_mean: float,
                       grid: int = 32, max_patches: int = 32, seed: int = 0) -> checkpoint.X0Prior:
    """Find the noise levels where the network's (clipped) x0 estimate is worse than the data mean.

    Noises ``patches`` ((N, S, S) in [-1, 1], held out from training) at ``grid``
    timesteps from T-1 down and compares the RMS error of the clipped x0 estimate
    with that of the constant ``data_mean``. ``below_abar`` is abar at the first
    timestep where the network wins: the samplers use the mean above that noise
    level (see :class:`~factory.diffusion.checkpoint.X0Prior`); 0 (prior off) if it never
    wins, as for a barely trained network. Deterministic
    (seeded noise); stops at the first win, so it costs a few forward passes.
    """
    device = next(net.parameters()).device
    pick = np.unique(np.linspace(0, len(patches) - 1, max_patches).astype(int))  # spread over the held-out region
    x0 = torch.from_numpy(np.ascontiguousarray(patches[pick], np.float32))[:, None].to(device)  # (N, 1, S, S)
    prior_rmse = float((x0 - data_mean).square().mean().sqrt())
    abar = alphas_cumprod(schedule)  # (T,) float64
    denoiser = EpsDenoiser(net, abar, clip_x0=True)  # exactly what the samplers see, without a prior
    gen = torch.Generator().manual_seed(seed)
    was_training = net.training
    net.eval()
    below = 0.0
    for t in timesteps(schedule.num_timesteps, min(grid, schedule.num_timesteps), Spacing.linspace).tolist():  # T-1 first
        a = float(abar[t])
        noise = torch.randn(x0.shape, generator=gen).to(device)
        x0_hat = denoiser(math.sqrt(a) * x0 + math.sqrt(1.0 - a) * noise, t)
        if float((x0_hat - x0).square().mean().sqrt()) <= prior_rmse:
            below = a
            break
    net.train(was_training)
    return checkpoint.X0Prior(mean=float(data_mean), below_abar=below)


def resolve(cfg: TrainConfig) -> tuple[checkpoint.ModelConfig, TrainingData]:
    """The config resolver: check every setting (one sentence each), read the data, fix the model config."""
    if cfg.preset not in PRESETS:
        raise FactoryError(f"unknown preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}.")
    cfg.loop.check()
    for name in ("hr_pixel_nm", "data_pixel_nm"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise FactoryError(f"--{name.replace('_', '-')} must be a positive number of nm, got {value}.")
    if not 0.0 <= cfg.holdout_fraction <= 0.9:
        raise FactoryError(f"--holdout-fraction must be in [0, 0.9], got {cfg.holdout_fraction}.")
    if not 1 <= cfg.num_timesteps <= MAX_TIMESTEPS:
        raise FactoryError(f"the number of timesteps must be in 1..{MAX_TIMESTEPS}, got {cfg.num_timesteps}.")
    unet_cfg = PRESETS[cfg.preset]
    patch = cfg.patch_size or unet_cfg.image_size
    if patch % unet_cfg.size_multiple:
        raise FactoryError(f"--patch-size must be a multiple of {unet_cfg.size_multiple} for preset {cfg.preset}.")
    unet_cfg = type(unet_cfg)(**{**asdict(unet_cfg), "image_size": patch,
                                 "attention_resolutions": tuple(r * patch // unet_cfg.image_size for r in unet_cfg.attention_resolutions)})
    data = prepare_data(cfg, patch)
    return checkpoint.ModelConfig(unet_cfg, ScheduleConfig(num_timesteps=cfg.num_timesteps), data.hr_pixel_nm), data


def ddpm_loss(train_x: torch.Tensor, abar: torch.Tensor, batch_size: int, device: torch.device) -> training.LossFn:
    """L_simple on a batch of ``batch_size`` patches of ``train_x`` (P, S, S): draws patch ids, t ~ U{0..T-1}
    and eps from the generator, in that order."""
    T = len(abar)

    def loss(net: torch.nn.Module, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train_x), (batch_size,), generator=gen)
        x0 = train_x[idx][:, None].to(device, memory_format=torch.channels_last)  # (B, 1, S, S)
        t = torch.randint(T, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = abar[t].to(device)[:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise  # (B, 1, S, S)
        return torch.nn.functional.mse_loss(net(xt, t.to(device).float()).float(), noise)

    return loss


def initialize_from(state: training.TrainingState, model: str, model_cfg: checkpoint.ModelConfig) -> str:
    """Fine-tuning: copy a DDPM's weights into the new run's network and EMA; returns that model's id.

    The UNet is fully convolutional, so patch size and pixel size may differ from the source model's;
    every other part of the network (preset, channels, attention levels) must match, and the noise
    schedule must be the same (the weights predict noise for its levels)."""
    src = checkpoint.load(model)
    mine, theirs = model_cfg.unet, src.config.unet
    scale = mine.image_size / theirs.image_size  # attention levels are stored as feature-map sizes
    same_net = (replace(theirs, image_size=mine.image_size,
                        attention_resolutions=tuple(round(r * scale) for r in theirs.attention_resolutions)) == mine)
    if not same_net or src.config.schedule != model_cfg.schedule:
        raise FactoryError(f"--init {model}: its network or noise schedule differs from this run's "
                           f"(preset and timesteps must match to fine-tune); train from scratch without --init.")
    weights = src.model.state_dict()
    state.net.load_state_dict(weights)
    state.ema.load_state_dict(weights)
    return src.model_id


def train(cfg: TrainConfig, console=None) -> Path:
    """Train (or resume) the unconditional DDPM; returns the checkpoint path."""
    model_cfg, data = resolve(cfg)
    out = Path(cfg.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FactoryError(f"cannot create {out.parent}: {exc.strerror}.") from None
    device = pick_device(cfg.device)
    loop = cfg.loop
    state = training.TrainingState(lambda: UNet(model_cfg.unet), loop, device)
    resumed = state_path(out).exists()
    state.resume(state_path(out), model_cfg.to_dict())
    if state.step >= cfg.steps:
        return out
    init = initialize_from(state, cfg.init, model_cfg) if cfg.init is not None and not resumed else None

    abar = alphas_cumprod(model_cfg.schedule).float()  # (T,)
    data_mean = float(data.train.mean())
    calibration_patches = data.holdout if len(data.holdout) else data.train  # no held-out strip: training patches
    card = {**cfg.card, "preset": cfg.preset, "patch_size": model_cfg.unet.image_size, "hr_pixel_nm": data.hr_pixel_nm,
            "training_images": data.sources, "train_patches": len(data.train), "holdout_patches": len(data.holdout),
            "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay, "seed": cfg.seed,
            "holdout": f"right {cfg.holdout_fraction:.0%} of every image", "device": str(device)}
    if cfg.init is not None:  # a resumed fine-tune keeps saying where it started
        card["initialized_from"] = f"{cfg.init} (model id {init})" if init else cfg.init

    def write_checkpoint(ema: torch.nn.Module, final: bool) -> None:
        prior = calibrate_x0_prior(ema, model_cfg.schedule, calibration_patches, data_mean)
        checkpoint.save(out, ema, replace(model_cfg, x0_prior=prior),
                        {**card, "steps": state.step, "train_wall_s": round(state.wall_s, 1), "final": final})

    loss = ddpm_loss(torch.from_numpy(data.train), abar, cfg.batch_size, device)
    training.run(state, loop, loss, device, out, model_cfg.to_dict(), write_checkpoint, console)
    return out
