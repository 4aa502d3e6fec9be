"""``geoseg mosaic OUT_A OUT_B ... -o MOSAIC/``: per-scene predictions onto one grid."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    block_size_option,
    interactive,
    overwrite_option,
    quiet_option,
    run_command,
    scheduler_option,
    vector_output_options,
    workers_option,
)
from geoseg.mosaic.rules import RULES


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder: landcover.tif, confidence.tif / probabilities.tif (when every input has them), "
                   "run.json and predict's sidecars (styles, quicklook, report.html, item.json).")
@click.option("--crs", help="CRS of the mosaic, e.g. EPSG:32631 (default: the first input's).")
@click.option("--res", help="Pixel size in CRS units, e.g. 10 or 10,10 (default: that of the first input in --crs).")
@click.option("--bounds", help="xmin,ymin,xmax,ymax in --crs (default: the union of the inputs), snapped outward "
              "to multiples of --res.")
@click.option("--like", type=click.Path(dir_okay=False),
              help="Take the whole grid (CRS, transform, size) of this raster instead of --crs/--res/--bounds.")
@click.option("--rule", type=click.Choice(RULES), default="confidence", show_default=True,
              help="Where scenes overlap: the highest confidence (needs confidence.tif in every input; ties go "
                   "to the earlier input), the first or the last input that observed the pixel.")
@block_size_option(1024, "Output block size in pixels (multiple of 256): one task each.")
@workers_option
@scheduler_option("threads, processes, synchronous, or tcp://HOST:PORT.")
@vector_output_options
@overwrite_option
@quiet_option
@run_command
def mosaic(inputs, output, crs, res, bounds, like, rule, block_size, workers, scheduler, vector, min_area,
           simplify, overwrite, quiet) -> None:
    """Mosaic the land-cover maps of scenes predicted in their own CRSs into one COG on one grid.

    INPUTS are geoseg predict output folders (OUT/ with run.json), in the order the first/last rules and ties
    use, or a batch output folder (OUT/ with index.json: its done scenes). Class maps are read onto the grid
    with nearest neighbour; a pixel masked in one scene (nodata, cloud) never beats an observed pixel of
    another. With --vector the polygons are made from the mosaic, so they are seamless across scene borders.
    """
    from geoseg.mosaic.api import mosaic_scenes

    r = mosaic_scenes(inputs, output, crs=crs, res=res, bounds=bounds, like=like, rule=rule, block_size=block_size,
                      workers=workers, scheduler=scheduler, overwrite=overwrite, vector=vector,
                      vector_options={"min_area": min_area, "simplify": simplify}, progress=interactive(quiet))
    if quiet:
        return
    click.echo(f"wrote {r.landcover} ({r.width} x {r.height} px, {len(r.scenes)} scenes, rule {r.rule}) in "
               f"{r.seconds:.1f} s")
    for sid, n in r.scene_pixels.items():
        click.echo(f"  {sid:<30}{n:>12} px")
    if r.nodata_pixels:
        click.echo(f"  {'(nodata)':<30}{r.nodata_pixels:>12} px")
    if "vector" in r.extra:
        click.echo(f"wrote {r.extra['vector_features']} polygons to {r.extra['vector']}")
