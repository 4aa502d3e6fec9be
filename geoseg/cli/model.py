"""``geoseg model init``, ``geoseg model info`` and ``geoseg model bench``."""

from __future__ import annotations

import os
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from geoseg.cli.options import overwrite_option, run_command
from geoseg.errors import OutputExistsError, ParameterError
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
@click.option("--json", "as_json", is_flag=True, help="Print the whole card as JSON (machine-readable).")
@click.option("--stac", "stac_out", type=click.Path(dir_okay=False),
              help="Write the card as a STAC Machine Learning Model (MLM v1.4.0) Item to this JSON file.")
@overwrite_option
@run_command
def info(package: str, as_json: bool, stac_out: str | None, overwrite: bool) -> None:
    """Summarise a model package's card: classes (with validation IoU), bands and their units, normalisation,
    tiling, training; --json prints the whole card, --stac writes it as a STAC MLM Item."""
    from geoseg.model.package import read_card, resolve

    path = resolve(package)
    card = read_card(path)
    if stac_out:
        from geoseg._util.atomic import atomic_write_text
        from geoseg.delivery.stac import dumps

        out = Path(stac_out)
        if out.exists() and not overwrite:
            raise OutputExistsError(f"{out} exists; choose another file or pass --overwrite")
        atomic_write_text(out, dumps(mlm_item(card, path, out)))
        click.echo(f"wrote STAC MLM item {out}")
        return
    if as_json:
        click.echo(card.dumps())
        return
    for line in card_summary(card, path):
        click.echo(line)


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _units(card: ModelCard) -> str:
    spec = card.input
    if spec is None:
        return "undeclared (the card has no 'input': no radiometric check)"
    what = " ".join(x for x in (spec.sensor, spec.level) if x) or "unknown sensor"
    return (f"{what} DN; {spec.quantity or 'physical value'} = DN x {spec.dn_scale:g}"
            + (f" + {spec.dn_offset:g}" if spec.dn_offset else ""))


def _network(card: ModelCard) -> str:
    params = ", ".join(f"{k} {v}" for k, v in card.arch_params.items())
    return (f"{card.architecture}" + (f" / {card.encoder}" if card.encoder else "") + (f" ({params})" if params else "")
            + f", output stride {card.output_stride}")


def _band_lines(card: ModelCard) -> list[str]:
    n = card.normalization
    how = "(DN - mean) / std" if n.kind == "meanstd" else "DN x scale + offset"
    cols = ("mean", "std") if n.kind == "meanstd" else ("scale", "offset")
    out = [f"bands      {len(card.bands)}, normalised {how}:",
           f"  {'#':>2}  {'band':<10}{cols[0]:>12}{cols[1]:>12}"]
    out += [f"  {i:>2}  {b:<10}{a:>12.6g}{c:>12.6g}" for i, (b, a, c) in enumerate(zip(card.bands, n.a, n.b), 1)]
    return out


def _class_lines(card: ModelCard) -> list[str]:
    val = card.extra.get("metrics", {}).get("validation") or {}
    per = val.get("per_class") or {}
    if val:
        out = [f"validation epoch {val.get('epoch', '-')}: pixel accuracy {_f(val.get('pixel_accuracy'))}, "
               f"mIoU {_f(val.get('miou'))}, {val.get('pixels', 0):,} labelled px"]
    else:
        out = ["validation no metrics in the card"]
    out.append(f"classes    {card.n_classes}" + (" (validation IoU, recall, labelled px)" if per else ""))
    for c in card.classes:
        m = per.get(c.name)
        tail = f"  {_f(m.get('iou')):>6}  {_f(m.get('recall')):>6}  {m.get('support', 0):>10,}" if m else ""
        out.append(f"  {c.value:>3}  {c.color}  {c.name:<22}{tail}")
    return out


def _training_lines(card: ModelCard) -> list[str]:
    tr = card.extra.get("training")
    if not isinstance(tr, dict):
        return []
    mins = tr.get("train_seconds")
    bits = [f"{len(tr.get('train_scenes', []))} training / {len(tr.get('validation_scenes', []))} validation "
            "scene(s)", f"best epoch {tr.get('best_epoch', '-')} of {tr.get('epochs_run', '-')}"]
    if mins is not None:
        bits.append(f"{mins / 60:.0f} min")
    if tr.get("precision"):
        bits.append(f"steps {tr['precision']}/{tr.get('memory_format', '-')}")
    lines = [f"training   {'; '.join(bits)}"]
    more = [f"created {tr['created']}"] if tr.get("created") else []
    if tr.get("init_from"):
        more.append(f"fine-tuned from {tr.get('init_from_model') or Path(str(tr['init_from'])).name}")
    if more:
        lines.append(f"           {'; '.join(more)}")
    return lines


def card_summary(card: ModelCard, path: Path) -> list[str]:
    """The readable summary ``geoseg model info`` prints (every line short; ``--json`` has the rest)."""
    lines = [f"model      {card.id} (version {card.version}){'' if card.trained else '  [UNTRAINED]'}",
             f"path       {path}"]
    lines += [f"           {t}" if i else f"about      {t}"
              for i, t in enumerate(textwrap.wrap(card.description, 96))]
    lines += [f"network    {_network(card)}", f"input      {_units(card)}",
              f"nodata     input value {card.input_nodata if card.input_nodata is not None else '(none)'} and "
              "masked pixels enter the network as 0 and are nodata in the map",
              f"tiling     tile {card.tile_size} px, overlap {card.overlap} px, gsd {card.gsd_m} m"]
    lines += _band_lines(card) + _class_lines(card) + _training_lines(card)
    more = (["confusion matrix"] if "metrics" in card.extra else []) + (
        ["training config"] if "training" in card.extra else []) + [
        k for k in card.extra if k not in ("metrics", "training")]
    lines.append("more       --json prints the whole card" + (f" ({', '.join(more)})" if more else ""))
    if not card.trained:
        lines.append("note: this model is untrained; its class maps are meaningless.")
    return lines


# -- the card as a STAC Machine Learning Model (MLM) item --------------------------------------------------
MLM_EXTENSION = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _weights_file(path: Path) -> Path:
    from geoseg.model.package import WEIGHTS_NAME

    return path / WEIGHTS_NAME if path.is_dir() else path


def _total_parameters(weights: Path) -> int:
    """Parameters in the safetensors file (BatchNorm running statistics excluded), read from its header."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as f:
        return int(sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()  # noqa: SIM118
                       if not k.endswith(BUFFERS)))


def _value_scaling(n: Normalization) -> list[dict[str, Any]]:
    if n.kind == "meanstd":
        return [{"type": "z-score", "mean": a, "stddev": b} for a, b in zip(n.a, n.b)]
    return [{"type": "scale", "value": 1.0 / a} if b == 0 else
            {"type": "processing", "format": "gdal-calc", "expression": f"A * {a!r} + {b!r}"} for a, b in zip(n.a, n.b)]


def _href(target: Path, item_file: Path) -> str:
    try:
        return os.path.relpath(target.resolve(), item_file.resolve().parent)
    except ValueError:  # another drive (Windows)
        return target.resolve().as_uri()


def _asset(target: Path, item_file: Path, media: str, roles: list[str], title: str) -> dict[str, Any]:
    from geoseg.delivery.stac import multihash_sha256

    return {"href": _href(target, item_file), "type": media, "title": title, "roles": roles,
            "file:size": target.stat().st_size, "file:checksum": multihash_sha256(target)}


def _mlm_io(card: ModelCard) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from geoseg.delivery.stac import classification_classes

    tile = card.tile_size
    order = ", ".join(str(v) for v in card.class_values)
    inp = {"name": "image", "bands": list(card.bands),
           "input": {"shape": [-1, card.in_channels, tile, tile], "dim_order": ["batch", "channel", "height", "width"],
                     "data_type": "float32"},
           "description": f"{_units(card)}. Input nodata (value {card.input_nodata}) and masked pixels are set to 0 "
                          f"after scaling; geoseg feeds {tile} px tiles overlapping by {card.overlap} px (any size "
                          f"that is a multiple of the output stride {card.output_stride} works).",
           "value_scaling": _value_scaling(card.normalization), "resize_type": None, "pre_processing_function": None}
    out = {"name": "logits", "tasks": ["semantic-segmentation"],
           "result": {"shape": [-1, card.n_classes, tile, tile], "dim_order": ["batch", "class", "height", "width"],
                      "data_type": "float32"},
           "description": f"Class logits; softmax over 'class' gives probabilities and the arg-max index i is the "
                          f"i-th class, whose values in index order are {order}.",
           "classification:classes": classification_classes([(c.value, c.name, c.color, c.name) for c in card.classes]),
           "post_processing_function": None}
    return [inp], [out]


def mlm_item(card: ModelCard, path: Path, item_file: Path) -> dict[str, Any]:
    """The card of package ``path`` as a STAC 1.1 Item with the MLM v1.4.0 extension (asset hrefs relative to
    ``item_file``'s folder): what the model takes (bands, shape, scaling), what it gives (classes), its weights."""
    from geoseg.delivery.stac import EXTENSIONS, STAC_VERSION
    from geoseg.model.package import CARD_NAME

    weights = _weights_file(path)
    tr = card.extra.get("training")
    training: dict[str, Any] = tr if isinstance(tr, dict) else {}
    created = training.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(weights.stat().st_mtime))
    init_from = training.get("init_from")
    name = re.sub(r"[^a-zA-Z0-9_.-]+", "-", card.id).strip("-_.")
    name = name if re.match(r"^[a-zA-Z][a-zA-Z0-9_.-]+[a-zA-Z0-9]$", name) else f"model-{name or 'unnamed'}0"
    hyper = {k: v for k, v in {"encoder": card.encoder, **card.arch_params, "tile_size": card.tile_size,
                                "overlap": card.overlap, "output_stride": card.output_stride}.items() if v is not None}
    inputs, outputs = _mlm_io(card)
    props: dict[str, Any] = {
        "title": card.id, "description": card.description or card.id, "datetime": created,
        "mlm:name": name, "mlm:architecture": card.architecture, "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "PyTorch", "mlm:total_parameters": _total_parameters(weights),
        "mlm:pretrained": bool(init_from),
        "mlm:pretrained_source": (training.get("init_from_model") or os.path.basename(str(init_from))) if init_from
        else None,
        "mlm:accelerator": None, "mlm:accelerator_constrained": False,
        "mlm:input": inputs, "mlm:output": outputs, "mlm:hyperparameters": hyper,
    }
    if card.gsd_m is not None:
        props["gsd"] = card.gsd_m
    weights_asset = _asset(weights, item_file, "application/octet-stream; framework=pytorch; application=safetensors",
                           ["mlm:model", "mlm:weights", "data"], "Network weights (safetensors, no pickle)")
    weights_asset.update({"mlm:artifact_type": "safetensors", "bands": [{"name": b} for b in card.bands]})
    assets = {"weights": weights_asset}
    if path.is_dir() and (path / CARD_NAME).exists():
        assets["card"] = _asset(path / CARD_NAME, item_file, "application/json", ["metadata"], "geoseg model card")
    return {"type": "Feature", "stac_version": STAC_VERSION,
            "stac_extensions": [MLM_EXTENSION, EXTENSIONS["classification"], EXTENSIONS["file"]],
            "id": card.id, "geometry": None, "properties": props, "links": [], "assets": assets}


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
