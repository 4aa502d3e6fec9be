"""``geoseg predict SCENE --model M -o OUT/``."""

from __future__ import annotations

import time

import click

from geoseg.cli.options import (
    JsonLog,
    Terminated,
    block_size_option,
    int_list,
    interactive,
    log_option,
    overwrite_option,
    quiet_option,
    run_command,
    scheduler_option,
    vector_output_options,
    workers_option,
)
from geoseg.errors import GeosegError, InputError, ParameterError
from geoseg.predict.blend import BLEND_MODES


@click.command()
@click.argument("scenes", nargs=-1, type=click.Path(dir_okay=True))
@click.option("--model", "-m", default="default", show_default=True,
              help="Model package folder/file, or a built-in name.")
@click.option("--output", "-o", required=True, type=click.Path(), help="Output folder.")
@click.option("--bands", callback=int_list,
              help="1-based input bands to feed the model, e.g. 2,3,4,8 (default: match band names).")
@click.option("--band", "band_files", multiple=True, metavar="NAME=PATH",
              help="A band in its own file, e.g. --band B2=T49QHE_B02.tif (repeat for each band; instead of SCENE; "
              "names: B2, B02, blue, SR_B2...).")
@click.option("--tile-size", type=int, help="Tile size in pixels (default: the model card's).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the model card's).")
@click.option("--blend", type=click.Choice(BLEND_MODES), default="cosine", show_default=True,
              help="Weight window for overlapping tiles.")
@click.option("--batch-size", type=int, help="Tiles per forward pass (default: measured per runtime on CPU, "
              "see docs/runtimes.md; 8 on CUDA).")
@block_size_option(1024, "Output block size (multiple of 256).")
@workers_option
@scheduler_option()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--runtime", default="auto", show_default=True,
              help="auto, torch, onnxruntime or openvino (auto: OpenVINO on an x86 CPU where installed, torch "
              "on CUDA; see docs/runtimes.md).")
@click.option("--precision", default="f32", show_default=True,
              help="f32 (every runtime reproduces torch eager), bf16 (OpenVINO or torch on a CPU with native "
              "BF16: faster; measured class maps differ from f32 in 0.05-0.15 % of pixels) or auto (bf16 where the "
              "CPU has it, else f32).")
@click.option("--no-resume", is_flag=True,
              help="Predict every block afresh instead of keeping the blocks an interrupted run into OUT with the "
              "same inputs, model and options finished (OUT/.geoseg-journal/, docs/scale.md).")
@click.option("--profile", is_flag=True, help="Print the time spent per stage on stderr (also in run.json).")
@click.option("--tta", type=click.Choice(["none", "flips", "d4"]), default="none", show_default=True,
              help="Test-time augmentation: average probabilities over flipped (4) or all D4 (8) copies.")
@click.option("--probabilities", is_flag=True, help="Also write probabilities.tif (uint8 percent per class).")
@click.option("--confidence", is_flag=True, help="Also write confidence.tif (max class probability, percent).")
@vector_output_options
@click.option("--allow-ungeoreferenced", is_flag=True, help="Accept a scene without CRS/geotransform.")
@click.option("--acquired", help="Acquisition date/time of SCENE (e.g. 2016-09-27 or 2016-09-27T08:17:13Z), "
              "for the products' metadata and STAC datetime (default: from the scene's tags, e.g. "
              "SENSING_TIME, DATE_ACQUIRED or DATE).")
@click.option("--input-scale", callback=lambda ctx, p, v: _scale(v),
              help="Multiply the scene's values by this to get the model's units (e.g. 10 for reflectance x 1000 "
              "against an x 10000 model), or 'auto' to apply what the input check detects.")
@click.option("--input-offset", type=float,
              help="Add this to the scene's values after --input-scale (e.g. -1000 for a Sentinel-2 baseline "
              ">= 04.00 scene without its offset metadata; 0 to accept values the check doubts).")
@click.option("--cloud-mask", default="auto", show_default=True, metavar="auto|none|detect|RASTER",
              help="Leave clouds out: 'auto' uses the product's own mask (L2A SCL, L1C MSK_CLASSI/MSK_CLOUDS, "
              "Landsat QA_PIXEL), 'none' ignores it, 'detect' detects them in a Sentinel-2 L1C product with "
              "s2cloudless (pip install 'geoseg[clouds]'), or a raster whose non-zero pixels are masked. Masked "
              "pixels are nodata in the map and 254 in confidence.tif.")
@click.option("--retry-failed", is_flag=True,
              help="With several scenes: also retry the scenes that failed in an earlier run into OUT.")
@click.option("--no-input-check", is_flag=True,
              help="Do not compare the scene's values with the model's training data (experts).")
@log_option
@overwrite_option
@quiet_option
@run_command
def predict(scenes, model, output, bands, tile_size, overlap, blend, batch_size, block_size, workers, scheduler,
            device, no_amp, runtime, precision, no_resume, profile, tta, probabilities, confidence, vector, min_area,
            simplify, allow_ungeoreferenced, acquired, input_scale, input_offset, no_input_check, band_files,
            cloud_mask, retry_failed, log_path, overwrite, quiet) -> None:
    """Predict a land-cover map of SCENE: a georeferenced multiband raster (GeoTIFF, VRT), a Sentinel-2 L1C/L2A
    product (.SAFE folder or .zip), a STAC Item JSON with one asset per band, or a Landsat Collection 2 Level-2
    folder; or of separate band files given with --band.

    Several SCENES (paths, quoted globs, @list.txt files, STAC ItemCollection JSON files) are predicted one by
    one into OUT/<scene id>/ with a run index OUT/index.json; a rerun skips the scenes already done with the same
    inputs, model and options, and a failing scene does not stop the others (exit 3 at the end if any failed).

    Off a terminal (cron, a batch scheduler) each scene ends with one summary line on stderr (scene, status,
    output, seconds, valid and class shares; nothing with --quiet); --log FILE appends the same as JSON lines."""
    from geoseg.io.inputs import parse_band_option
    from geoseg.predict.batch import is_batch

    show = interactive(quiet)
    options = dict(
        bands=bands, tile_size=tile_size, overlap=overlap, blend=blend,
        batch_size=batch_size, block_size=block_size, workers=workers, scheduler=scheduler, device=device,
        amp=False if no_amp else None, tta=tta, probabilities=probabilities, confidence=confidence,
        overwrite=overwrite, allow_ungeoreferenced=allow_ungeoreferenced, acquired=acquired, progress=show,
        vector=vector, vector_options={"min_area": min_area, "simplify": simplify},
        input_scale=input_scale, input_offset=input_offset, input_check=not no_input_check,
        band_files=parse_band_option(band_files) if band_files else None, cloud_mask=cloud_mask,
        runtime=runtime, precision=precision, profile=profile, resume=not no_resume,
    )
    batch = bool(scenes) and is_batch(scenes)
    if batch and band_files:
        raise ParameterError("--band NAME=PATH gives one scene; do not combine it with several SCENES")
    log = JsonLog(log_path, "predict")
    try:
        if batch:
            _batch(scenes, model, output, retry_failed, quiet, options, log)
        else:
            _single(scenes[0] if scenes else None, model, output, options, profile, show, quiet, log)
    finally:
        log.close()


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, GeosegError):
        return exc.exit_code
    return 130 if isinstance(exc, KeyboardInterrupt) else 143 if isinstance(exc, Terminated) else 1


def _single(scene, model, output, options: dict, profile: bool, show: bool, quiet: bool, log: JsonLog) -> None:
    """One scene: the class table on a terminal, else one summary line (not with --quiet); a --log line."""
    from geoseg.predict.api import predict_scene
    from geoseg.predict.batch import outcome, outcome_text

    bands = options.get("band_files") or {}
    name = str(scene) if scene is not None else "--band " + ",".join(f"{k}={v}" for k, v in bands.items())
    t0 = time.perf_counter()
    try:
        result = predict_scene(scene, model, output, **options)
    except BaseException as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.write(scene=name, status="failed", error=f"{type(exc).__name__}: {first}", exit_code=_exit_code(exc),
                  seconds=round(time.perf_counter() - t0, 3))
        raise
    o = outcome(result)
    log.write(scene=name, status="done", run_id=result.run_id, **o)
    if profile:
        from geoseg.predict.profile import format_profile

        click.echo(format_profile(result.extra["profile"]), err=True)
    if show:
        print_summary(result)
    elif not quiet:
        click.echo(f"geoseg predict: {name}: done {outcome_text(o)}", err=True)


def _batch(scenes, model, output, retry_failed: bool, quiet: bool, options: dict, log: JsonLog) -> None:
    """Several scenes: one line per scene (also off a terminal: cron logs) and a summary line unless --quiet, a
    --log line per scene, exit 3 on failures."""
    from geoseg.predict.batch import predict_batch

    def logged(sid: str, entry: dict) -> None:
        keep = {k: v for k, v in entry.items() if k not in ("fingerprint", "path")}
        if entry.get("status") == "done":
            keep["output"] = f"{output}/{sid}/landcover.tif"
        log.write(scene=sid, **keep)

    res = predict_batch(scenes, model, output, retry_failed=retry_failed,
                        say=None if quiet else (lambda line: click.echo(line, err=True)), on_scene=logged, **options)
    if not quiet or res.failed:
        click.echo(f"geoseg predict: {len(res.done)} done, {len(res.skipped)} skipped, {len(res.failed)} failed "
                   f"in {res.seconds:.0f} s; index {res.index}", err=True)
    if res.failed:
        first = next(iter(res.failed.items()))
        raise InputError(f"{len(res.failed)} scene(s) failed, e.g. {first[0]}: {first[1]}; see {res.index}, fix them "
                         "and rerun (--retry-failed)")


def _scale(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or 'auto'; e.g. --input-scale 10") from None


def print_summary(result) -> None:
    """Class-area table of a finished prediction."""
    total = sum(result.class_pixels.values())
    click.echo(f"wrote {result.landcover} ({result.tiles} tiles, {result.seconds:.1f} s)")
    area = result.pixel_area_m2
    click.echo(f"{'class':<22}{'pixels':>12}{'share':>8}" + (f"{'area ha':>12}" if area else ""))
    for name, n in result.class_pixels.items():
        share = 100.0 * n / total if total else 0.0
        line = f"{name:<22}{n:>12}{share:>7.1f}%"
        if area:
            line += f"{n * area / 1e4:>12.2f}"
        click.echo(line)
    if result.nodata_pixels:
        click.echo(f"{'(nodata)':<22}{result.nodata_pixels:>12}")
    if result.cloud_pixels:
        click.echo(f"{'  of which cloud':<22}{result.cloud_pixels:>12}")
    if "vector" in result.extra:
        click.echo(f"wrote {result.extra['vector_features']} polygons to {result.extra['vector']}")
