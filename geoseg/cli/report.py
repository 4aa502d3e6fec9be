"""``geoseg report OUT_DIR``: a self-contained report.html for a predict run."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import overwrite_option, quiet_option, run_command


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--title", help="Report heading (default: 'Land cover of <scene file name>').")
@click.option("--no-stac", is_flag=True,
              help="Leave an existing item.json alone (by default it is rewritten so its checksums, "
                   "which cover report.html, stay valid).")
@overwrite_option
@quiet_option
@run_command
def report(out_dir, title, no_stac, overwrite, quiet) -> None:
    """Write OUT_DIR/report.html for the geoseg predict run in OUT_DIR.

    One self-contained HTML file (quicklook embedded, inline styles, no network access): inputs, model
    card summary, class areas (pixels, hectares, share), processing options and links to the outputs.
    """
    from geoseg.delivery.report import write_report

    path = write_report(out_dir, title=title, overwrite=overwrite)
    item = Path(out_dir) / "item.json"
    refreshed = False
    if item.is_file() and not no_stac:
        from geoseg.delivery.stac import write_stac_item

        write_stac_item(out_dir)  # the item records every file's checksum, the new report's included
        refreshed = True
    if not quiet:
        click.echo(f"wrote {path}" + (f" (and refreshed {item})" if refreshed else ""))
