"""``geoseg train CONFIG.yaml [--KEY VALUE ...] [--resume] [-o OUT] [--overwrite] [--quiet]``.

Every config key is also an option (``--val-scenes``, ``--arch-params``, ...); an
option given on the command line overrides the YAML value.  Lists take comma
separated values or YAML (``--val-scenes '*/paris/*,*/nantes/*'``), mappings take
YAML (``--arch-params '{encoder_depth: 4}'``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

import click

from geoseg.cli.options import overwrite_option, quiet_option, run_command


def _config_fields() -> list:
    from geoseg.training.config import TrainConfig

    return list(fields(TrainConfig))


def _default_text(f: Any) -> str:
    d = f.default if f.default is not MISSING else f.default_factory()
    if d in (None, [], {}, ""):
        return ""
    return f" [default: {d}]"


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One click option per TrainConfig key (unset options leave the YAML value alone)."""
    for f in reversed(_config_fields()):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "") + _default_text(f)
        d = f.default if f.default is not MISSING else None
        if isinstance(d, bool):
            opt = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
        elif f.name == "output":
            opt = click.option("-o", flag, f.name, default=None, help=help_text)
        else:
            opt = click.option(flag, f.name, default=None, metavar="VALUE", help=help_text)
        fn = opt(fn)
    return fn


@click.command(context_settings={"max_content_width": 110})
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@config_options
@click.option("--resume", is_flag=True, help="Continue the run from the last checkpoint in its work_dir.")
@overwrite_option
@quiet_option
@run_command
def train(config: str | None, resume: bool, overwrite: bool, quiet: bool, **keys: Any) -> None:
    """Train a segmentation model on image/label rasters as CONFIG (YAML) says; writes a model package.

    Checkpoints (every epoch) and the per-epoch log (log.csv, log.json) go to
    work_dir (default OUTPUT.train); the package holds the epoch with the best
    validation mIoU, with its metrics in the card.
    """
    from geoseg.training.config import build_config
    from geoseg.training.loop import train as run_training

    overrides = {k: v for k, v in keys.items() if v is not None}
    cfg = build_config(config, overrides)
    log = None if quiet else (lambda line: click.echo(line))
    result = run_training(cfg, resume=resume, overwrite=overwrite, log=log)
    if not quiet:
        m = result.metrics
        if m.get("per_class"):
            click.echo(f"{'class':<22}{'IoU':>8}{'prec':>8}{'recall':>8}{'pixels':>12}")
            for name, v in m["per_class"].items():
                def fmt(x: float | None) -> str:
                    return f"{x:>8.3f}" if x is not None else f"{'-':>8}"
                click.echo(f"{name:<22}{fmt(v['iou'])}{fmt(v['precision'])}{fmt(v['recall'])}{v['support']:>12}")
        click.echo(f"log: {result.work_dir}/log.csv")
