"""``factory generate``: make N samples on Ray into a Zarr v3 + Parquet store (local folder or object storage)."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from factory.cli.app import command, console
from factory.cli.progress import LOG_EVERY_S, eta_text
from factory.diffusion.sampler_config import SamplerKind  # torch-free
from factory.pipeline.spec import DEFAULT_STORE, Product
from factory.structures.config import StructureKind


class ProgressView:
    """A live bar on a terminal; one plain line every LOG_EVERY_S seconds in a log file."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.terminal = console.is_terminal
        self.bar = Progress(TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
                            TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[shards]}"), console=console, transient=False)
        self.task, self.last_line = None, 0.0

    def show(self, p) -> None:  # appears once the run is planned (not for a complete store or a refusal)
        faults = f"shards failed {p.shards_failed}, re-queued {p.shards_retried}" if p.shards_failed or p.shards_retried else ""
        rate = f"{p.samples_per_s:.2f} samples/s"
        if self.terminal:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task("generate", total=p.n, completed=p.done, rate="", shards="")
            self.bar.update(self.task, completed=p.done, rate=rate, shards=faults)
            return
        now = time.monotonic()
        if now - self.last_line >= LOG_EVERY_S or p.done == p.n:
            self.last_line = now
            console.print(f"generate: {p.done}/{p.n} samples, {rate}, {p.workers} worker(s), elapsed {p.elapsed_s:.0f} s"
                          + eta_text(p.done, p.n, p.samples_per_s) + (f", {faults}" if faults else ""),
                          highlight=False, markup=False)

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


@command("generate")
def generate_command(
    n: int = typer.Option(..., "--n", min=1, help="Number of samples (sample ids 0..n-1)."),
    out: str = typer.Option(DEFAULT_STORE, "--out", help="Store to write: a folder, or a URL (s3://bucket/pairs.zarr, gs://..., file:///...). An existing store made with the same settings is resumed; one made with other settings is refused unless --overwrite."),
    structure: StructureKind = typer.Option(StructureKind.ddpm, "--structure", help="Where the HR structures come from: ddpm (a diffusion model), simulate (the mathematical microtubule model) or images (random patches of --images)."),
    mode: Product = typer.Option(Product.pairs, "--mode", help="What is made of each structure: pairs (LR widefield frame + HR, for restoration/CARE) or smlm (SMLM frame stack, per-frame KDE targets and emitter table, for localization)."),
    model: str = typer.Option("default", "--model", help="ddpm: 'default' (the shipped 40 nm model), 'default20' (its 20 nm fine-tune) or a checkpoint path (.safetensors); it reaches the workers through Ray's object store."),
    sampler: SamplerKind = typer.Option(SamplerKind.dpmpp, "--sampler", help="With --structure ddpm: " + SamplerKind.help()),
    steps: int = typer.Option(20, "--steps", min=1, help="ddpm: sampler steps = network evaluations per image (<= the model's T)."),
    eta: float = typer.Option(0.0, "--eta", min=0.0, max=1.0, help="ddpm with --sampler ddim: noise scale in [0, 1] (0 = deterministic, 1 = DDPM-like)."),
    images: list[str] = typer.Option(None, "--images", help="images: HR TIFF file or folder (repeat for several); each sample is a random crop in one of the 8 flips/rotations."),
    images_pixel_nm: float = typer.Option(None, "--images-pixel-nm", help="images: their pixel size in nm when the files do not record it."),
    hr_pixel_nm: float = typer.Option(None, "--hr-pixel-nm", help="simulate / images: HR pixel size in nm (images are sum-binned to it by an integer factor). (default: 40 nm for simulate, the images' own for images; ddpm: the model's)"),
    hr_size: int = typer.Option(None, "--hr-size", min=1, help="HR image side in pixels (a multiple of the downsample factor, and of the model's size multiple for ddpm). (default: the model's training size; 64 for simulate and images)"),
    degradation: Path = typer.Option(None, "--degradation", help="Optics config (.json or .toml): for pairs schemas/degradation.v1.json (photons, background photons/LR pixel, PSF sigma nm or NA + wavelength nm, camera QE, read noise e-, gain e-/ADU, offset ADU, downsample); for smlm schemas/smlm.v1.json. (default: pairs: photons 100-3000 log-uniform, background 0-30 photons/px, PSF sigma 85-110 nm, fixed camera; smlm: SmlmConfig.defaults())"),
    frames: int = typer.Option(None, "--frames", min=1, help="smlm: camera frames per sample (sets the SMLM config's n_frames). (default: the config's, 100 in SmlmConfig.defaults())"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per structure-source call; batches are fixed runs of consecutive sample ids inside a shard (ddpm HR agrees across batch sizes only up to floating-point batching effects)."),
    shard_size: int = typer.Option(16, "--shard-size", min=1, help="Samples per shard: the unit of work, of Zarr sharding and of one manifest part."),
    seed: int = typer.Option(0, "--seed", min=0, help="Run seed; sample i's structure, noise and degradation derive from (seed, i) only."),
    address: str = typer.Option(None, "--address", help="Ray cluster to join: 'auto' or ray://host:port (fails in one sentence if it does not answer within a minute); the store must be reachable from every node (object storage or a shared filesystem). (default: an embedded local Ray bound to 127.0.0.1, no dashboard)"),
    connect_timeout_s: float = typer.Option(60.0, "--connect-timeout-s", min=1.0, help="With --address: give up joining the cluster after this many seconds, in one sentence."),
    workers: int = typer.Option(None, "--workers", min=1, help="Structure actors (each holds the model once). (default: one per GPU for ddpm on GPUs, else one per CPU; the pool follows nodes that join or leave)"),
    bf16: bool = typer.Option(False, "--bf16", help="ddpm: bf16 autocast for the sampler network (for GPUs; measured no faster on CPU); part of the run spec, as it changes HR bits."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out made with other settings: deletes what the store owns (arrays, manifest, its attrs and audit), never other files in the folder, and never a file at --out."),
) -> None:
    """Generate synthetic training data: HR structures from a diffusion model (or the mathematical model, or your
    own images) on Ray, each turned into what a microscope records (an LR widefield frame, or an SMLM frame stack
    with ground-truth emitters), committed shard by shard with a Parquet manifest.

    Interrupted runs resume: rerun the same command and only shards without a manifest part are redone.
    """
    from factory.errors import FactoryError
    from factory.pipeline.driver import generate
    from factory.pipeline.spec import ClusterConfig, GenerateConfig
    from factory.structures import StructureConfig

    source = StructureConfig(kind=structure, model=model, sampler={"kind": sampler.value, "steps": steps, "eta": eta},
                             bf16=bf16, images=tuple(images or ()), images_pixel_nm=images_pixel_nm)
    cfg = GenerateConfig(n=n, out=out, structure=source, product=mode, degradation=degradation, frames=frames,
                         batch_size=batch_size, shard_size=shard_size, seed=seed, hr_size=hr_size, hr_pixel_nm=hr_pixel_nm,
                         overwrite=overwrite)
    view = ProgressView()
    try:
        result = generate(cfg, ClusterConfig(address=address, workers=workers, connect_timeout_s=connect_timeout_s),
                          on_progress=view.show)
    finally:
        view.stop()
    if result.status == "already complete":
        console.print(f"{out} is already complete ({result.n} samples); nothing to do.", highlight=False, markup=False)
        return
    console.print(f"{result.status}: {result.generated} samples generated ({result.skipped} already there) of n={result.n} "
                  f"in {result.wall_s:.1f} s = {result.samples_per_s:.2f} samples/s on {result.workers} worker(s); "
                  f"store {out} ({result.stored_bytes / 1e6:.1f} MB)" + (f"; {result.retried} shard(s) re-queued" if result.retried else ""),
                  highlight=False, markup=False)
    if result.failed_shards:
        raise FactoryError(result.failure_sentence())
