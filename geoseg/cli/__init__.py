"""The ``geoseg`` command: one module per command, shared options in :mod:`geoseg.cli.options`."""

from __future__ import annotations

import click

from geoseg._version import __version__
from geoseg.cli.options import run_command  # noqa: F401  (re-exported for command modules)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="geoseg")
def cli() -> None:
    """geoseg: land-cover segmentation of large georeferenced satellite scenes."""


def _register() -> None:
    from geoseg.cli import model, predict

    cli.add_command(predict.predict)
    cli.add_command(model.model)
    for name in ("vectorize", "mosaic", "train", "evaluate", "change", "monitor", "report"):
        try:
            mod = __import__(f"{__name__}.{name}", fromlist=[name])
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue
        cli.add_command(getattr(mod, name))


_register()


def main() -> None:
    cli(prog_name="geoseg")
