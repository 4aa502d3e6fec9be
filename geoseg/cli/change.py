"""``geoseg change BEFORE.tif AFTER.tif -o OUT/``: forest loss and gain between two dates."""

from __future__ import annotations

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


@click.command()
@click.argument("before", type=click.Path(dir_okay=True))
@click.argument("after", type=click.Path(dir_okay=True))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder: change.tif, loss.gpkg, change.json and the sidecars change.qml, "
                   "change_quicklook.png, report.html and item.json (STAC Item) are written into it.")
@click.option("--forest", default="trees", show_default=True,
              help="Forest classes by name (from the rasters' CLASS_<value> tags, as geoseg predict writes them) "
                   "or value, comma-separated, e.g. trees or 1,2. With --probability: the band name in a "
                   "multi-band probabilities.tif.")
@click.option("--probability", is_flag=True,
              help="The inputs are forest-probability rasters (uint8 percent, or float 0..1), not class rasters.")
@click.option("--threshold", type=float, default=50.0, show_default=True,
              help="With --probability: forest where probability >= this many percent.")
@click.option("--before-mask", type=click.Path(dir_okay=False),
              help="Valid-pixel (clear-sky) mask of BEFORE: nonzero = valid.")
@click.option("--after-mask", type=click.Path(dir_okay=False),
              help="Valid-pixel (clear-sky) mask of AFTER: nonzero = valid.")
@click.option("--align", is_flag=True,
              help="Resample AFTER (and the masks) onto BEFORE's grid when the grids differ (nearest; bilinear "
                   "for probabilities).")
@click.option("--min-area", help="Minimum mapping unit of the loss polygons, with a unit: 0.3ha (default), "
              "3000m2; smaller loss patches are dropped.")
@click.option("--preset", type=click.Choice(["prodes"], case_sensitive=False),
              help="A named minimum mapping unit: prodes = 6.25 ha.")
@click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="Pixel connectivity of the loss patches.")
@block_size_option(1024, "Window size in pixels, a multiple of 256 (the change raster's tile).")
@workers_option
@scheduler_option("threads, processes, synchronous, or tcp://HOST:PORT.")
@overwrite_option
@quiet_option
@run_command
def change(before, after, output, forest, probability, threshold, before_mask, after_mask, align, min_area, preset,
           connectivity, block_size, workers, scheduler, overwrite, quiet) -> None:
    """Forest loss and gain from BEFORE to AFTER (two land-cover or forest-probability rasters).

    Writes OUT/change.tif (uint8 COG on BEFORE's grid: 0 no change, 1 forest loss, 2 forest gain,
    255 unobserved = nodata or masked in either date), OUT/loss.gpkg (loss polygons at least
    --min-area large, with area_ha, n_pixels, centroid_lon/lat) and OUT/change.json, then the
    sidecars OUT/change.qml (QGIS style), OUT/change_quicklook.png, OUT/report.html and, last,
    OUT/item.json (STAC Item with the checksums of every other file).
    """
    from geoseg.change.api import detect_change

    r = detect_change(
        before, after, output, forest=forest, probability=probability, threshold=threshold,
        before_mask=before_mask, after_mask=after_mask, align=align, min_area=min_area, preset=preset,
        connectivity=int(connectivity), block_size=block_size, workers=workers, scheduler=scheduler,
        overwrite=overwrite, progress=interactive(quiet),
    )
    if quiet:
        return
    p = r.pixels
    observed = max(p.observed, 1)
    click.echo(f"wrote {r.change}, {r.loss_polygons} and {r.record} in {r.seconds:.1f} s"
               + (" (inputs aligned onto BEFORE's grid)" if r.aligned else ""))
    click.echo(f"forest loss {r.loss_ha:.2f} ha ({p.loss} px, {100 * p.loss / observed:.2f}% of observed), "
               f"gain {r.gain_ha:.2f} ha ({p.gain} px), no change {p.no_change} px, unobserved {p.unobserved} px")
    click.echo(f"{r.loss_polygon_count} loss polygons >= {r.min_area_ha:g} ha ({r.loss_polygon_ha:.2f} ha); "
               f"{r.dropped_polygons} smaller patches dropped")
