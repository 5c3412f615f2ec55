"""``factory generate``: make N LR/HR pairs on Ray into a Zarr v3 + Parquet store."""
from __future__ import annotations

from pathlib import Path

import typer

from factory.cli.app import command, console
from factory.diffusion.sampler_config import SamplerKind  # torch-free
from factory.pipeline.spec import DEFAULT_STORE


@command("generate")
def generate_command(
    n: int = typer.Option(..., "--n", min=1, help="Number of LR/HR pairs (sample ids 0..n-1)."),
    out: Path = typer.Option(DEFAULT_STORE, "--out", help="Store to write (a Zarr v3 folder). An existing store made with the same settings is resumed; one made with other settings is refused unless --overwrite."),
    model: str = typer.Option("default", "--model", help="'default' (the shipped model) or a checkpoint path (.safetensors); the same path must be readable on every Ray node."),
    sampler: SamplerKind = typer.Option(SamplerKind.dpmpp, "--sampler", help=SamplerKind.help()),
    steps: int = typer.Option(20, "--steps", min=1, help="Sampler steps = network evaluations per image (<= the model's T)."),
    eta: float = typer.Option(0.0, "--eta", min=0.0, help="DDIM noise (0 = deterministic; ddim only)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per network evaluation; batches are fixed runs of consecutive sample ids inside a shard (HR agrees across batch sizes only up to floating-point batching effects)."),
    shard_size: int = typer.Option(16, "--shard-size", min=1, help="Samples per shard: the unit of work, of Zarr sharding and of one manifest part."),
    seed: int = typer.Option(0, "--seed", min=0, help="Run seed; sample i's noise and degradation derive from (seed, i) only."),
    address: str = typer.Option(None, "--address", help="Ray cluster to join: 'auto' or ray://host:port; the store path must be reachable from every node. (default: an embedded local Ray bound to 127.0.0.1, no dashboard)"),
    workers: int = typer.Option(None, "--workers", min=1, help="Sampler actors (each holds the model once). (default: one per GPU, else one per CPU)"),
    degradation: Path = typer.Option(None, "--degradation", help="Optics config (.json or .toml, schemas/degradation.v1.json): photons, background photons/LR pixel, PSF sigma nm or NA + wavelength nm, camera QE, read noise e-, gain e-/ADU, offset ADU, downsample. (default: DegradationConfig.dataset_defaults(): photons 100-3000 log-uniform, background 0-30 photons/px, PSF sigma 85-110 nm, fixed camera)"),
    hr_size: int = typer.Option(None, "--hr-size", min=1, help="HR image side in pixels (a multiple of the model's size multiple and of the downsample factor); LR side = hr-size / downsample. (default: the model's training size)"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast for the sampler network (for GPUs; measured no faster on CPU); part of the run spec, as it changes HR bits."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing store at --out made with other settings and start over (a non-store folder is never deleted)."),
) -> None:
    """Generate synthetic LR/HR training pairs: sample HR images with the diffusion model on Ray,
    degrade each with the optical model into an LR camera frame, commit both with a Parquet manifest.

    Interrupted runs resume: rerun the same command and only shards without a manifest part are redone.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from factory.errors import FactoryError
    from factory.pipeline.driver import generate
    from factory.pipeline.spec import ClusterConfig, GenerateConfig

    cfg = GenerateConfig(n=n, out=out, model=model, sampler={"kind": sampler.value, "steps": steps, "eta": eta},
                         batch_size=batch_size, shard_size=shard_size, seed=seed, degradation=degradation,
                         hr_size=hr_size, bf16=bf16, overwrite=overwrite)
    cluster = ClusterConfig(address=address, workers=workers)
    columns = (TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
               TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[shards]}"))
    bar = Progress(*columns, console=console, transient=False)
    task = None

    def show(p) -> None:  # the bar appears once the run is planned (not for a complete store or a refusal)
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("generate", total=p.n, completed=p.done, rate="", shards="")
        faults = f"shards failed {p.shards_failed}, re-queued {p.shards_retried}" if p.shards_failed or p.shards_retried else ""
        bar.update(task, completed=p.done, rate=f"{p.samples_per_s:.2f} samples/s", shards=faults)

    try:
        result = generate(cfg, cluster, on_progress=show)
    finally:
        if task is not None:
            bar.stop()
    if result.status == "already complete":
        console.print(f"{out} is already complete ({result.n} samples); nothing to do.")
        return
    console.print(f"{result.status}: {result.generated} samples generated ({result.skipped} already there) of n={result.n} "
                  f"in {result.wall_s:.1f} s = {result.samples_per_s:.2f} samples/s on {result.workers} worker(s); "
                  f"store {out} ({result.stored_bytes / 1e6:.1f} MB)" + (f"; {result.retried} shard(s) re-queued" if result.retried else ""))
    if result.failed_shards:
        raise FactoryError(result.failure_sentence())
