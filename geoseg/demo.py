"""``python -m geoseg.demo OUT``: the README's demo - predict the shipped sample scene.

Uses the built-in ``default`` model when the package has one.  Otherwise it
creates an *untrained* Unet package (random weights) and says loudly that the
resulting classes are meaningless.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from geoseg.cli.options import run_command
from geoseg.cli.predict import print_summary

SAMPLE = Path(__file__).resolve().parent.parent / "tiles" / "hongkong_20160927" / "image.tif"


def _untrained_package(out: Path) -> Path:
    from geoseg.model.card import ModelCard, Normalization, parse_classes
    from geoseg.model.package import init_package
    from geoseg.model.schemes import DYNAMIC_WORLD, S2_DW_BANDS

    card = ModelCard(
        id="demo-unet-resnet18-untrained",
        architecture="Unet",
        encoder="resnet18",
        bands=S2_DW_BANDS,
        classes=parse_classes(DYNAMIC_WORLD),
        normalization=Normalization("meanstd", (1500.0,) * 9, (1000.0,) * 9),
        tile_size=256,
        overlap=64,
        description="Untrained demo model (random weights): classes are meaningless.",
    )
    return init_package(card, out, seed=0, overwrite=True)


@click.command()
@click.argument("out_dir", default="demo-output")
@click.option("--scene", type=click.Path(exists=True, dir_okay=False), default=str(SAMPLE), show_default=True)
@run_command
def main(out_dir: str, scene: str) -> None:
    """Predict the sample scene into OUT_DIR (default demo-output/)."""
    from geoseg.model.package import builtin_models
    from geoseg.predict.api import predict_scene

    out = Path(out_dir)
    if "default" in builtin_models():
        model: str | Path = "default"
    else:
        model = _untrained_package(out / "untrained-model")
        click.secho(
            "NOTE: no trained default model is installed yet; using an UNTRAINED network "
            "(random weights). The map shows geoseg's pipeline, but its classes are meaningless.",
            fg="yellow", err=True,
        )
    click.echo(f"predicting {scene} with model {model} -> {out}/")
    result = predict_scene(scene, model, out, overwrite=True, probabilities=True, confidence=True,
                           progress=None)
    print_summary(result)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    click.echo(f"outputs in {out}/: {', '.join(files)}")
    click.echo("open landcover.tif in QGIS (palette, class names, .qml style); quicklook.png is a preview")


if __name__ == "__main__":
    main(sys.argv[1:])
