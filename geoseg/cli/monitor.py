"""``geoseg monitor run CONFIG.yaml``: the scheduled forest-loss monitoring job (see docs/monitor.md).

Exit codes: 0 ok, nothing new, or partial (every AOI this run could lock is done; the others are locked by
another live run, which is processing them: a warning on stderr); 2 bad option; 3 bad input (config, AOIs,
scenes); 4 bad model package; 5 output problem; 75 every AOI is locked by another run, nothing was done
(EX_TEMPFAIL: retry later, or use --wait); 1 unexpected (a bug).
"""

from __future__ import annotations

import json
import sys

import click

from geoseg.cli.options import run_command


@click.group("monitor")
def monitor() -> None:
    """Scheduled, idempotent forest-loss monitoring of areas of interest."""


@monitor.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True, help="Wait for another run's per-AOI lock instead of exiting with code 75.")
@click.option("--aoi", "aoi_ids", multiple=True, help="Only this AOI id (repeatable).")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Output folder, instead of the config's 'output' (which is relative to the config file).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the JSON summary.")
@run_command
def run(config: str, wait: bool, aoi_ids: tuple[str, ...], output: str | None, quiet: bool) -> None:
    """Process every scene not yet processed, for every AOI in CONFIG (YAML); print a JSON summary.

    \b
    Writes per AOI OUT/<aoi_id>/: alerts.gpkg, alerts_gfw.tif (+ .qml), changes_since_<date>.geojson,
    report.html and item.json (STAC Item with checksums); and OUT/report.html (index of every AOI:
    alerts and area by confidence, links to the AOI reports) with OUT/catalog.json (STAC Catalog of
    the AOI items), rewritten by each run that delivered something. See docs/monitor.md.

    \b
    Exit codes: 0 ok / nothing new / partial (AOIs locked by another live run skipped, a warning),
    2 bad option, 3 bad input, 4 bad model package, 5 output problem, 75 every AOI is locked by
    another run and nothing was done (retry later or --wait), 1 a bug.
    """
    from geoseg.monitoring.api import EXIT_LOCKED, run_monitor

    summary = run_monitor(config, wait=wait, aoi_ids=list(aoi_ids) or None, output=output)
    if not quiet:
        click.echo(json.dumps(summary, indent=2, default=str))
    if summary["status"] == "partial":
        click.echo(f"Warning: skipped AOI(s) {', '.join(summary['locked_aois'])}: locked by another geoseg monitor "
                   "run, which is processing them; every other AOI is done (exit code 0).", err=True)
    if summary["status"] == "locked":
        click.echo(f"Error: {summary['message']}; another geoseg monitor run is working on it. Retry later or "
                   "pass --wait (exit code 75).", err=True)
        sys.exit(EXIT_LOCKED)
