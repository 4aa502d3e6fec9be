"""``geoseg model init``, ``geoseg model info`` and ``geoseg model bench``."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import overwrite_option, run_command
from geoseg.errors import ParameterError
from geoseg.model.card import ModelCard, Normalization, parse_classes, read_class_file


@click.group()
def model() -> None:
    """Create and inspect model packages (safetensors weights + geoseg-model.json card)."""


@model.command("init")
@click.option("--arch", default="Unet", show_default=True,
              help="Any smp architecture (Unet, FPN, ...) or PixelLinear/PixelMLP.")
@click.option("--encoder", default="resnet18", show_default=True, help="smp encoder (ignored by Pixel* archs).")
@click.option("--bands", required=True, help="Input band names in order, e.g. B2,B3,B4,B8.")
@click.option("--classes", "classes_path", required=True, type=click.Path(dir_okay=False),
              help="JSON list of {value, name, color}.")
@click.option("--mean", help="Per-band means (input units) for mean/std normalisation.")
@click.option("--std", help="Per-band standard deviations (input units).")
@click.option("--scale", type=float, default=1e-4, show_default=True,
              help="Without --mean/--std: x*scale (Sentinel-2 DN -> reflectance).")
@click.option("--tile-size", type=int, default=512, show_default=True)
@click.option("--overlap", type=int, default=64, show_default=True)
@click.option("--gsd", type=float, default=10.0, show_default=True, help="Ground sample distance (m).")
@click.option("--nodata", "input_nodata", type=float, default=0.0, show_default=True,
              help="Input value meaning nodata when the raster declares none.")
@click.option("--id", "model_id", help="Model id (default: <arch>-<encoder>-untrained).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random initial weights.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Package folder to create.")
@overwrite_option
@run_command
def init(arch, encoder, bands, classes_path, mean, std, scale, tile_size, overlap, gsd, input_nodata,
         model_id, seed, output, overwrite) -> None:
    """Create an untrained model package (a starting point for training, or for tests)."""
    from geoseg.model.package import init_package
    from geoseg.model.registry import canonical_arch, output_stride

    band_names = tuple(b.strip() for b in bands.split(",") if b.strip())
    classes = parse_classes(read_class_file(classes_path))
    n = len(band_names)
    if (mean is None) != (std is None):
        raise ParameterError("give both --mean and --std, or neither (then --scale is used)")
    if mean is not None:
        try:
            m = tuple(float(v) for v in mean.split(","))
            s = tuple(float(v) for v in std.split(","))
        except ValueError:
            raise ParameterError("--mean/--std must be comma-separated numbers, one per band") from None
        norm = Normalization.from_json({"type": "meanstd", "mean": list(m), "std": list(s)}, n)
    else:
        norm = Normalization("scale", (scale,) * n, (0.0,) * n)
    arch = canonical_arch(arch)
    pixel = arch.startswith("Pixel")
    card = ModelCard(
        id=model_id or f"{arch.lower()}-{'pixel' if pixel else encoder}-untrained",
        architecture=arch,
        encoder=None if pixel else encoder,
        bands=band_names,
        classes=classes,
        normalization=norm,
        tile_size=tile_size,
        overlap=overlap,
        output_stride=output_stride(arch),
        gsd_m=gsd,
        input_nodata=input_nodata,
        trained=False,
        description="Untrained (random weights): its classes are meaningless until it is trained.",
    )
    path = init_package(card, output, seed=seed, overwrite=overwrite)
    click.echo(f"wrote untrained model package {path}")


@model.command("info")
@click.argument("package")
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@run_command
def info(package: str, as_json: bool) -> None:
    """Print a model package's card."""
    from geoseg.model.package import read_card, resolve

    path = resolve(package)
    card = read_card(path)
    if as_json:
        click.echo(card.dumps())
        return
    click.echo(f"model     {card.id} (version {card.version}){'' if card.trained else '  [UNTRAINED]'}")
    click.echo(f"path      {path}")
    click.echo(f"network   {card.architecture}" + (f" / {card.encoder}" if card.encoder else ""))
    click.echo(f"bands     {','.join(card.bands)}")
    n = card.normalization
    click.echo(f"normalise {n.kind}: {', '.join(f'{a:g}/{b:g}' for a, b in zip(n.a, n.b))}")
    click.echo(f"tiling    tile {card.tile_size}, overlap {card.overlap}, output stride {card.output_stride}")
    click.echo(f"gsd       {card.gsd_m} m; input nodata {card.input_nodata}")
    click.echo("classes")
    for c in card.classes:
        click.echo(f"  {c.value:>3}  {c.color}  {c.name}")
    for key, value in card.extra.items():
        click.echo(f"{key:<9} {json.dumps(value) if not isinstance(value, str) else value}")
    if not card.trained:
        click.echo("note: this model is untrained; its class maps are meaningless.")


@model.command("bench")
@click.argument("package", default="default")
@click.option("--batch-sizes", default="1,2,4", show_default=True, help="Comma-separated batch sizes.")
@click.option("--tile-size", type=int, help="Tile side (default: the card's tile size).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed forwards per case (median).")
@click.option("--threads", type=int, help="Intra-op threads (default: every CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@run_command
def bench(package: str, batch_sizes: str, tile_size: int | None, repeats: int, threads: int | None,
          as_json: bool) -> None:
    """Bare-forward Mpx/s of each installed runtime on this machine (CPU), and its class agreement and
    max probability difference with torch eager on a fixed input (real data when shipped)."""
    from geoseg.model.bench import dumps, format_table, run_bench

    try:
        batches = tuple(int(b) for b in batch_sizes.split(",") if b.strip())
    except ValueError:
        raise ParameterError("--batch-sizes must be comma-separated integers, e.g. 1,2,4") from None
    if not batches or min(batches) < 1 or repeats < 1:
        raise ParameterError("--batch-sizes and --repeats must be positive")
    result = run_bench(package, batches, tile_size, repeats, threads)
    click.echo(dumps(result) if as_json else format_table(result))
