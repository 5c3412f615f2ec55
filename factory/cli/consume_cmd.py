"""Commands that read a store: ``factory query | info | verify | preview | export | audit``.

Results go to stdout (tables, CSV, JSON), progress and notes to stderr. Bad input (not a store,
a newer schema version, a bad SQL condition, an existing output) is one sentence and exit 2;
``verify`` exits 1 when it finds damage.
"""
from __future__ import annotations

import enum
import io
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factory.cli.app import check_output, command, console
from factory.normalize import Normalization, Upsample  # numpy only: keeps `factory --help` free of torch / zarr imports


class OutputFormat(str, enum.Enum):
    table = "table"  # a rich table on the terminal
    csv = "csv"  # CSV to --out or stdout
    parquet = "parquet"  # Parquet to --out (required)


# The values of factory.tools.export.ExportFormat (not imported here: it pulls in zarr and duckdb).
ExportFormatName = enum.Enum("ExportFormatName", {k: k for k in ("tiff", "npz", "thunderstorm", "decode")}, type=str)

STORE_ARG = typer.Argument(..., help="A factory store: the folder written by `factory generate`, or its URL (s3://bucket/pairs.zarr, file:///..., gs://...).")
WHERE_HELP = ("SQL condition on manifest columns selecting the samples, e.g. \"photons < 300 AND psf_sigma_nm > 100\" "
              "(columns and units: schemas/manifest.v1.json; photons, nm, ADU, e-). (default: every committed sample)")


def _stdout() -> Console:
    return Console(soft_wrap=False)


WIDE = 8  # results with more columns are printed one record per block (column | value), like psql's \\x


def _cell(v) -> str:
    return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def _print_rows(result) -> None:
    """A rich table of an Arrow table; one (column, value) block per row when it has many columns."""
    out = _stdout()
    if result.num_columns <= WIDE:
        table = Table(*result.column_names)
        for row in result.to_pylist():
            table.add_row(*map(_cell, row.values()))
        out.print(table)
        return
    for j, row in enumerate(result.to_pylist()):
        table = Table("column", title=f"row {j + 1}", title_justify="left")
        table.add_column("value", overflow="fold")
        for name, value in row.items():
            table.add_row(name, _cell(value))
        out.print(table)


@command("query")
def query_command(
    store: str = STORE_ARG,
    sql: str = typer.Argument(..., help="DuckDB SQL over the views `manifest` (one row per committed sample) and `audit` "
                                        "(after `factory audit`; join on sample_id), e.g. \"SELECT count(*) FROM manifest WHERE photons < 300\"."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table (on the terminal), csv (to --out or stdout) or parquet (needs --out)."),
    out: Path = typer.Option(None, "--out", help="Write the result to this file instead of stdout (csv or parquet)."),
    limit: int = typer.Option(50, "--limit", min=1, help="Rows shown by --format table (the rest are counted, not shown)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Run SQL over a store's manifest with DuckDB and print or save the result."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from factory import query
    from factory.errors import FactoryError

    if format is OutputFormat.parquet and out is None:
        raise FactoryError("--format parquet needs --out FILE (Parquet is not printed to the terminal).")
    if format is OutputFormat.table and out is not None:
        raise FactoryError("--out needs --format csv or parquet (a table is only printed).")
    if out is not None:
        check_output(out, overwrite)
    result = query.run(query.open_store(store), sql)
    if format is OutputFormat.parquet:
        pq.write_table(result, out)
    elif format is OutputFormat.csv:
        if out is not None:
            pacsv.write_csv(result, out)
        else:
            buf = io.BytesIO()
            pacsv.write_csv(result, buf)
            typer.echo(buf.getvalue().decode(), nl=False)
    else:
        _print_rows(result.slice(0, limit))
        if result.num_rows > limit:
            console.print(f"({result.num_rows} rows, first {limit} shown; --limit N or --format csv for more)")
    if out is not None:
        console.print(f"wrote {result.num_rows} rows to {out}")


@command("info")
def info_command(
    store: str = STORE_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON (counts, shapes, pixel sizes in nm, model, run spec, observed ranges with units, size in bytes)."),
) -> None:
    """Summarize a store: samples and shards (committed / planned), shapes and pixel sizes (nm),
    model and sampler, degradation ranges next to the observed manifest ranges, size on disk."""
    from factory import query
    from factory.tools import info

    facts = info.collect(query.open_store(store))
    if json_out:
        typer.echo(info.to_json(facts))
    else:
        info.render(facts, _stdout())


@command("verify")
def verify_command(
    store: str = STORE_ARG,
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Accept what an unfinished, resumable run leaves (uncommitted shards, temp files): report them as notes and exit 0 if nothing is damaged."),
) -> None:
    """Check every committed sample against its checksum (decoded through zarr-python), the metadata third-party
    readers need, manifest rows against the run spec, and look for missing, duplicate, foreign or stray data.
    Exit 0 and "OK"; exit 1 with the list and the command that fixes it."""
    from factory.cli.progress import Bar
    from factory.store.verify import verify

    with Bar("verify", "shards", transient=True) as bar:
        report = verify(store, on_shard=lambda k: bar.advance())
    failures, notes = report.failures(allow_incomplete), report.notes(allow_incomplete)
    for p in notes:
        console.print(f"note: {p.line()}", highlight=False, markup=False)
    checked = f"{report.samples_checked} samples in {report.shards_checked} committed shards checked"
    if failures:
        for p in failures:
            typer.echo(p.line())
        damaged = any(p.damage for p in failures)
        word = "DAMAGED" if damaged else "INCOMPLETE"
        console.print(f"[bold red]{word}:[/bold red] {len(failures)} problem(s) in {escape(store)} ({checked}); "
                      f"to fix: {escape(report.fix())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    typer.echo(f"OK: {report.samples_checked} samples in {report.shards_checked} committed shards match their checksums"
               + (f" ({len(notes)} note(s))" if notes else "") + ".")


@command("repair")
def repair_command(
    store: str = STORE_ARG,
    address: str = typer.Option(None, "--address", help="Ray cluster to join for the regeneration: 'auto' or ray://host:port. (default: an embedded local Ray)"),
    workers: int = typer.Option(None, "--workers", min=1, help="Structure actors for the regeneration. (default: one per GPU, else one per CPU)"),
    model: str = typer.Option(None, "--model", help="DDPM stores: the checkpoint to regenerate with, when it is no longer at the path the run recorded (checked by SHA-256)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be rebuilt and regenerated."),
) -> None:
    """Verify a store, rebuild lost metadata (root and array zarr.json) from its run spec, drop the commit markers
    of damaged shards and regenerate exactly those shards, byte-identical to the originals, then finalize."""
    from factory.pipeline.repair import repair
    from factory.pipeline.spec import ClusterConfig

    result = repair(store, ClusterConfig(address=address, workers=workers), model=model, dry_run=dry_run,
                    on_note=lambda line: console.print(line, highlight=False, markup=False))
    typer.echo(result.sentence())


@command("preview")
def preview_command(
    store: str = STORE_ARG,
    out: Path = typer.Option(..., "--out", help="PNG file to write (e.g. grid.png)."),
    where: str = typer.Option(None, "--where", help=WHERE_HELP),
    n: int = typer.Option(8, "--n", min=1, max=256, help="Pairs shown: the first N matching samples by sample_id."),
    per_row: int = typer.Option(4, "--per-row", min=1, help="Pairs per row of the montage."),
    tile_px: int = typer.Option(160, "--tile-px", min=16, help="Approximate displayed side of each tile in screen pixels (images are enlarged by an integer factor, nearest)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Write a PNG montage of LR/HR pairs: LR upsampled (nearest) beside HR, each contrast-stretched,
    with a scale bar in µm and the pixel sizes (nm) in the caption."""
    from factory import query
    from factory.tools.preview import PreviewConfig, write_preview

    check_output(out, overwrite)
    ids = write_preview(query.open_store(store), PreviewConfig(n=n, where=where, pairs_per_row=per_row, tile_px=tile_px), out)
    console.print(f"wrote {out}: {len(ids)} sample(s), ids {', '.join(map(str, ids))}", highlight=False)


@command("export")
def export_command(
    store: str = STORE_ARG,
    format: ExportFormatName = typer.Option(..., "--format", help="pairs stores: tiff (lr.tif uint16 ADU + hr.tif float32 density, ImageJ stacks with pixel size, Fiji) or npz (CSBDeep training data pairs.npz: X, Y, axes 'SCYX'). smlm stores: thunderstorm (per sample <id>.tif frame stack + ThunderSTORM ground-truth <id>.csv), decode (<id>.tif + DECODE EmitterSet <id>.decode.csv) or tiff (hr.tif + frames/<id>.tif + kde/<id>.tif)."),
    out: Path = typer.Option(..., "--out", help="Folder to write into (created); also gets samples.csv, the manifest rows in export order."),
    where: str = typer.Option(None, "--where", help=WHERE_HELP),
    per_sample: bool = typer.Option(False, "--per-sample", help="tiff only: one file per sample, lr/<id>.tif and hr/<id>.tif, instead of two stacks."),
    normalize: Normalization = typer.Option(Normalization.percentile, "--normalize", help="npz X (LR): none (ADU), percentile (per image, 1 / 99.8 % -> 0 / 1, CSBDeep's default) or camera (photo-electrons = (ADU - offset) x gain e-/ADU / EM gain)."),
    normalize_hr: Normalization = typer.Option(Normalization.none, "--normalize-hr", help="npz Y (HR): none (normalized density in [0, 1]) or percentile."),
    upsample: Upsample = typer.Option(Upsample.bilinear, "--upsample", help="npz X: LR to the HR grid by bilinear (half-pixel centres, as factory.data and `factory care` use) or nearest interpolation (CSBDeep needs X and Y of one shape)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files of an earlier export in --out."),
) -> None:
    """Export pairs for other tools: TIFF stacks with pixel sizes (Fiji) or a CSBDeep .npz."""
    from factory import query
    from factory.tools.export import ExportConfig, ExportFormat, export

    cfg = ExportConfig(format=ExportFormat(format.value), out=out, where=where, per_sample=per_sample, normalize=normalize,
                       normalize_hr=normalize_hr, upsample=upsample, overwrite=overwrite)
    if Normalization(normalize_hr) is Normalization.camera:
        from factory.errors import FactoryError

        raise FactoryError("--normalize-hr cannot be camera: HR is normalized density, not camera ADU.")
    result = export(query.open_store(store), cfg)
    console.print(f"exported {result.samples} sample(s) to {out}: {', '.join(p.name for p in result.files[:4])}"
                  + (f" and {len(result.files) - 4} more" if len(result.files) > 4 else ""), highlight=False)


@command("audit")
def audit_command(
    store: str = STORE_ARG,
    train: list[Path] = typer.Option(..., "--train", help="Training TIFF file or folder (repeat --train for several): the images the model was trained on."),
    data_pixel_nm: float = typer.Option(None, "--data-pixel-nm", min=0.0, help="Pixel size of the training images in nm when their metadata lacks it; they are sum-binned to the store's HR pixel size (an integer factor). (default: from the TIFF)"),
    stride: int = typer.Option(None, "--stride", min=1, help="Pixels between training patch origins on the binned grid; smaller finds shifted copies at stride^-2 the speed. (default: HR side // 4, as training cuts patches)"),
    batch: int = typer.Option(256, "--batch", min=1, help="Generated images per matrix product (memory ~ 8 x batch x HR side^2 x 4 bytes)."),
    chunk: int = typer.Option(2048, "--chunk", min=1, help="Training patches per matrix product (memory ~ chunk x HR side^2 x 4 bytes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing STORE/audit/audit.parquet."),
) -> None:
    """Memorization check: for every committed sample, the max normalized cross-correlation (Pearson,
    under the 8 flips/rotations) with any HR-sized training patch, written to STORE/audit/audit.parquet
    (query it as table `audit`, joined on sample_id)."""
    from factory import query
    from factory.audit import AuditConfig, audit
    from factory.cli.progress import Bar

    cfg = AuditConfig(train=tuple(train), data_pixel_nm=data_pixel_nm, stride=stride, batch=batch, chunk=chunk, overwrite=overwrite)
    opened = query.open_store(store)
    with Bar("audit", "samples", transient=True) as bar:
        result = audit(opened, cfg, on_progress=lambda done, total: bar.update(done, total=total))
    top = ", ".join(f"#{i} {s:.3f}" for i, s in result.top)
    typer.echo(f"audited {result.samples} samples against {result.patches} training patches: max NCC {result.max_ncc:.3f}, "
               f"mean {result.mean_ncc:.3f} (Saguy et al. 2023: 0.345 max / 0.336 mean for generated vs training, "
               f"0.372 between independent real images); highest: {top}")
    console.print(f"wrote {result.path}; e.g. factory query {store} \"SELECT sample_id, max_ncc FROM audit ORDER BY max_ncc DESC LIMIT 10\"",
                  highlight=False, soft_wrap=True)
