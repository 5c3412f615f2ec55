"""DDPM training (Ho et al. 2020, eq. 14: L_simple = E ||eps - eps_theta(x_t, t)||^2).

Patches with overlap and the 8 flips/rotations are cut once from the training
images; each step draws a batch of patches, timesteps t ~ U{0..T-1} and noise
from one seeded generator. AdamW, EMA weights, periodic checkpoints and a
resumable training state (``<out>.state.pt``, loaded with ``weights_only=True``).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from factory import images
from factory.render import load_training_image
from factory.device import autocast, pick_device
from factory.diffusion import checkpoint
from factory.diffusion.samplers import EpsDenoiser
from factory.diffusion.schedule import ScheduleConfig, Spacing, alphas_cumprod, timesteps
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


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


def train(cfg: TrainConfig, console=None) -> Path:
    if cfg.preset not in PRESETS:
        raise FactoryError(f"unknown preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}.")
    for name in ("steps", "batch_size", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise FactoryError(f"--{name.replace('_', '-')} must be at least 1.")
    if not cfg.lr > 0:
        raise FactoryError("--lr must be positive.")
    unet_cfg = PRESETS[cfg.preset]
    patch = cfg.patch_size or unet_cfg.image_size
    if patch % unet_cfg.size_multiple:
        raise FactoryError(f"--patch-size must be a multiple of {unet_cfg.size_multiple} for preset {cfg.preset}.")
    unet_cfg = type(unet_cfg)(**{**asdict(unet_cfg), "image_size": patch,
                                 "attention_resolutions": tuple(r * patch // unet_cfg.image_size for r in unet_cfg.attention_resolutions)})
    data = prepare_data(cfg, patch)
    out = Path(cfg.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FactoryError(f"cannot create {out.parent}: {exc.strerror}.") from None
    device = pick_device(cfg.device)
    model_cfg = checkpoint.ModelConfig(unet_cfg, ScheduleConfig(num_timesteps=cfg.num_timesteps), data.hr_pixel_nm)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = UNet(unet_cfg)
    net.to(device).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, wall_s = 0, 0.0
    state_path_ = state_path(out)
    if state_path_.exists():
        try:
            state = torch.load(state_path_, map_location="cpu", weights_only=True)
        except Exception:
            raise FactoryError(f"{state_path_}: corrupt training state; delete it to start over.") from None
        if json.loads(state["model_config"]) != json.loads(json.dumps(model_cfg.to_dict())):
            raise FactoryError(f"{state_path_}: was made with another model config; delete it or choose another --out.")
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, wall_s = int(state["step"]), float(state["wall_s"])
    if step >= cfg.steps:
        return out

    abar = alphas_cumprod(model_cfg.schedule).float()  # (T,)
    train_x = torch.from_numpy(data.train)  # (P, S, S)
    data_mean = float(data.train.mean())
    calibration_patches = data.holdout if len(data.holdout) else data.train  # no held-out strip: training patches
    card = {**cfg.card, "preset": cfg.preset, "patch_size": patch, "hr_pixel_nm": data.hr_pixel_nm,
            "training_images": data.sources, "train_patches": len(data.train), "holdout_patches": len(data.holdout),
            "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay, "seed": cfg.seed,
            "holdout": f"right {cfg.holdout_fraction:.0%} of every image", "device": str(device)}

    def save(final: bool) -> None:
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "wall_s": wall_s,
                    "model_config": json.dumps(model_cfg.to_dict())}, state_path_.with_suffix(".tmp"))
        state_path_.with_suffix(".tmp").replace(state_path_)
        prior = calibrate_x0_prior(ema, model_cfg.schedule, calibration_patches, data_mean)
        checkpoint.save(out, ema, replace(model_cfg, x0_prior=prior),
                        {**card, "steps": step, "train_wall_s": round(wall_s, 1), "final": final})

    t_start, loss_avg = time.time() - wall_s, float("nan")
    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        TextColumn("{task.fields[rate]:.2f} steps/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    session_t0, session_step0 = time.time(), step
    with progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, loss=loss_avg, rate=0.0)
        while step < cfg.steps:
            idx = torch.randint(len(train_x), (cfg.batch_size,), generator=gen)
            x0 = train_x[idx][:, None].to(device, memory_format=torch.channels_last)  # (B, 1, S, S)
            t = torch.randint(cfg.num_timesteps, (cfg.batch_size,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            a = abar[t].to(device)[:, None, None, None]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise  # (B, 1, S, S)
            with autocast(device, cfg.bf16):
                loss = torch.nn.functional.mse_loss(net(xt, t.to(device).float()).float(), noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(p, 1 - decay)
            loss_avg = loss.item() if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss.item()
            wall_s = time.time() - t_start
            progress.update(task, completed=step, loss=loss_avg,
                            rate=(step - session_step0) / max(time.time() - session_t0, 1e-9))
            out_of_time = cfg.max_minutes is not None and (time.time() - session_t0) > 60 * cfg.max_minutes
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                save(final=step == cfg.steps)
                if not progress.console.is_terminal:  # a log file gets one line per checkpoint
                    progress.console.print(f"step {step}/{cfg.steps} loss {loss_avg:.4f} wall {wall_s:.0f} s")
            if out_of_time:
                break
    return out
