"""``geoseg vectorize LANDCOVER.tif -o landcover.gpkg``."""

from __future__ import annotations

import warnings

import click

from geoseg.cli.options import (
    block_size_option,
    interactive,
    overwrite_option,
    quiet_option,
    run_command,
    scheduler_option,
    workers_option,
)
from geoseg.vector.options import FORMATS, SCHEDULERS

FORMAT_CHOICES = tuple(FORMATS)  # gpkg, parquet, fgb, geojson


@click.command()
@click.argument("raster", type=click.Path(dir_okay=True))
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Output file; the format follows the extension (.gpkg, .parquet, .fgb, .geojson).")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES, case_sensitive=False),
              help="Output format, when the extension does not tell (default: by extension).")
@click.option("--layer", help="GeoPackage layer name (default: the output file's stem).")
@click.option("--band", type=int, default=1, show_default=True, help="Band of RASTER holding the class values.")
@click.option("--min-area", help="Minimum mapping unit, e.g. 5000 (m²), 5000m2 or 0.5ha: smaller patches are "
              "merged into their largest neighbour before polygonizing.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="Pixel connectivity of patches and polygons.")
@click.option("--simplify", help="Coverage simplification tolerance in metres (e.g. 10) or pixels (e.g. 1.5px); "
              "no gaps or overlaps between neighbours.")
@click.option("--classes", help="Only these classes, by name or value, e.g. trees,water or 1,0.")
@block_size_option(2048, "Block size in pixels.")
@workers_option
@scheduler_option(type=click.Choice(SCHEDULERS), default="processes",
                  help="dask scheduler: processes polygonize blocks in parallel (GDAL's polygonize "
                  "holds the GIL, so threads cannot).")
@overwrite_option
@quiet_option
@run_command
def vectorize(raster, output, fmt, layer, band, min_area, connectivity, simplify, classes, block_size, workers,
              scheduler, overwrite, quiet) -> None:
    """Turn a class RASTER (e.g. geoseg's landcover.tif) into land-cover polygons.

    Polygons are seamless across processing blocks, valid, and carry class, class_name,
    area_m2, area_ha, perimeter_m and a stable id (the index row*width+col of the polygon's
    first pixel).  A per-class summary is written beside the output as .summary.csv/.json.
    """
    from geoseg.vector.api import format_summary, vectorize_raster

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = vectorize_raster(
            raster, output, format=fmt, layer=layer, band=band, min_area=min_area,
            connectivity=int(connectivity), simplify=simplify, classes=classes, block_size=block_size,
            workers=workers, scheduler=scheduler, overwrite=overwrite, progress=interactive(quiet),
        )
    for message in result.warnings:
        click.secho(f"warning: {message}", fg="yellow", err=True)
    if not quiet:
        where = f"{result.output}" + (f" (layer {result.layer})" if result.layer else "")
        click.echo(f"wrote {result.features} polygons to {where} in {result.seconds:.1f} s")
        click.echo(format_summary(result.summary))
        click.echo(f"summary: {result.summary_csv}, {result.summary_json}")
