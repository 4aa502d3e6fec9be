"""``geoseg evaluate PRED.tif TRUTH.tif`` and ``geoseg evaluate --model M --data CONFIG.yaml``."""

from __future__ import annotations

import json
import math

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
from geoseg.errors import ParameterError


@click.command()
@click.argument("pred", required=False, type=click.Path(dir_okay=False))
@click.argument("truth", required=False, type=click.Path(dir_okay=False))
@click.option("--model", "-m",
              help="With --data: the model to evaluate (default: 'default'). With PRED TRUTH: take class names "
                   "from this model's card.")
@click.option("--data", type=click.Path(dir_okay=False),
              help="YAML config 'images: [{image: ..., label: ...}]': predict each image with --model and "
                   "evaluate against its label.")
@click.option("--align", is_flag=True,
              help="Resample the truth with nearest neighbour onto the prediction grid when the grids differ.")
@click.option("--ignore", type=int, multiple=True,
              help="Truth value to leave out (repeatable), e.g. --ignore 0 for 'unlabelled'.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write every metric and the confusion matrix as JSON ('-': to stdout, no table).")
@click.option("--confusion-png", type=click.Path(dir_okay=False), help="Write the confusion matrix as a PNG.")
@block_size_option(1024, "Window size in pixels.")
@workers_option
@scheduler_option()
@click.option("--device", help="With --data: auto, cpu, cuda or cuda:N (default: the config's, else auto).")
@click.option("--allow-ungeoreferenced", is_flag=True,
              help="Accept rasters without CRS/geotransform (then only their sizes must match).")
@overwrite_option
@quiet_option
@run_command
def evaluate(pred, truth, model, data, align, ignore, json_path, confusion_png, block_size, workers, scheduler,
             device, allow_ungeoreferenced, overwrite, quiet) -> None:
    """Accuracy of a land-cover map PRED against a reference map TRUTH (class rasters on one grid).

    Prints per-class IoU, precision, recall and F1, and pixel accuracy, mean accuracy,
    mIoU, frequency-weighted IoU and Cohen's kappa.  Nodata pixels of either raster
    and --ignore truth values are left out.
    """
    from geoseg.evaluation.api import evaluate_model, evaluate_rasters
    from geoseg.evaluation.outputs import check_output_files, write_confusion_png, write_json

    if data is not None:
        if pred or truth:
            raise ParameterError("give either PRED TRUTH or --model M --data CONFIG, not both")
    elif not (pred and truth):
        raise ParameterError("give a prediction and a truth raster (PRED TRUTH), or --model M --data CONFIG")
    if device is not None and data is None:
        raise ParameterError("--device only applies with --model/--data (prediction); drop it")
    check_output_files([json_path, confusion_png], overwrite)
    show = interactive(quiet)
    ign = ignore or None
    if data is not None:
        result = evaluate_model(model or "default", data, ignore=ign, align=True if align else None,
                                block_size=block_size, workers=workers, scheduler=scheduler, device=device,
                                progress=show)
    else:
        result = evaluate_rasters(pred, truth, classes=model, ignore=ign, align=align, block_size=block_size,
                                  workers=workers, scheduler=scheduler,
                                  allow_ungeoreferenced=allow_ungeoreferenced, progress=show)
    written = []
    if json_path == "-":
        click.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    elif json_path:
        written.append(write_json(result, json_path, overwrite))
    if confusion_png:
        title = f"{result.model}" if result.model else None
        written.append(write_confusion_png(result.metrics, confusion_png, overwrite, title=title))
    if quiet:
        return
    for w in result.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    if json_path != "-":
        print_table(result)
        for p in written:
            click.echo(f"wrote {p}")


def _f(x: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(x) else f"{x:>{width}.3f}"


def print_table(result) -> None:
    """Per-class table and the summary metrics ('-': undefined, see docs/evaluate.md)."""
    m = result.metrics
    w = max([len("class")] + [len(f"{c.value} {c.name}") for c in m.classes])
    w = min(w, 32)
    click.echo(f"{'class':<{w}}{'IoU':>8}{'precision':>11}{'recall':>8}{'F1':>8}{'support':>12}{'predicted':>12}")
    for c in m.classes:
        label = f"{c.value} {c.name}" if c.name != str(c.value) else str(c.value)
        click.echo(f"{label[:w]:<{w}}{_f(c.iou, 8)}{_f(c.precision, 11)}{_f(c.recall, 8)}{_f(c.f1, 8)}"
                   f"{c.support:>12}{c.predicted:>12}")
    click.echo(
        f"pixel accuracy {_f(m.pixel_accuracy, 0)}  mean accuracy {_f(m.mean_accuracy, 0)}  "
        f"mIoU {_f(m.miou, 0)}  FWIoU {_f(m.fwiou, 0)}  kappa {_f(m.kappa, 0)}"
    )
    excluded = f"nodata {result.nodata_pixels}"
    if result.ignore:
        excluded += f", ignored {result.ignored_pixels} (truth {','.join(map(str, result.ignore))})"
    click.echo(f"{m.pixels} pixels evaluated ({excluded})" + (", truth aligned" if result.aligned else ""))
