"""Options and error handling shared by the CLI commands."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import click

from geoseg.errors import GeosegError, OutputError


class Terminated(BaseException):
    """SIGTERM (a scheduler's timeout, ``kill``): unwinds like Ctrl-C, so temporary files are removed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked child that kept this handler: just end, as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated()


_MAIN_PID = os.getpid()


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"Warning: {message}\n"


def run_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn geoseg errors into one line on stderr and the error's exit code (no traceback); warnings are one
    ``Warning: ...`` line each; Ctrl-C and SIGTERM clean up (every command removes its temporary files on the
    way out) and exit with 130 and 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _MAIN_PID
        _MAIN_PID = os.getpid()
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning
        try:
            return fn(*args, **kwargs)
        except GeosegError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: no output was written.", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("Terminated: no output was written.", err=True)
            sys.exit(143)
        finally:
            warnings.formatwarning = formatwarning
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


log_option = click.option("--log", "log_path", type=click.Path(dir_okay=False), metavar="FILE",
                          help="Append one JSON line per scene (status, output, seconds, valid and class shares, or "
                          "the error and its exit code) to FILE, e.g. for cron or a batch scheduler.")


class JsonLog:
    """``--log FILE``: JSON lines appended one ``write`` each (``O_APPEND``: concurrent runs do not interleave
    within a line); opened before any work, so an unwritable log is a one-line output error at once."""

    def __init__(self, path: str | os.PathLike | None, command: str) -> None:
        self.path, self.command, self._fd = path, command, None
        if path is not None:
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            except OSError as e:
                raise OutputError(f"cannot write the log {path} ({e.strerror}); give a writable --log FILE") from None

    def write(self, **record: Any) -> None:
        if self._fd is None:
            return
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": self.command, **record}
        os.write(self._fd, (json.dumps(line, default=str) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Parse '2,3,4,8' into [2, 3, 4, 8]."""
    if value is None:
        return None
    try:
        out = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of band numbers, e.g. 2,3,4,8") from None
    if not out:
        raise click.BadParameter("give at least one band number, e.g. 2,3,4,8")
    return out


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary; errors and warnings only.")
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def interactive(quiet: bool) -> bool:
    """Show progress/summary only on a terminal and without --quiet."""
    return not quiet and sys.stderr.isatty()


workers_option = click.option("--workers", type=int, help="Parallel dask workers (default: CPU cores).")


def scheduler_option(help: str = "threads, processes, or tcp://HOST:PORT.", **kwargs: Any) -> Callable[..., Any]:
    """``--scheduler``; checked by :func:`geoseg._util.execution.check_scheduler` in the API."""
    kwargs.setdefault("default", "threads")
    return click.option("--scheduler", show_default=True, help=help, **kwargs)


def block_size_option(default: int, help: str) -> Callable[..., Any]:
    """``--block-size``; checked by :func:`geoseg.io.grid.check_block_size` in the API."""
    return click.option("--block-size", type=int, default=default, show_default=True, help=help)


def vector_output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--vector FORMAT``, ``--min-area``, ``--simplify``: also polygonize the class map (``geoseg predict``,
    ``geoseg mosaic``); checked by the API before any work."""
    fn = click.option("--simplify", help="With --vector: coverage simplification tolerance in metres, e.g. 10.")(fn)
    fn = click.option("--min-area", help="With --vector: minimum mapping unit, e.g. 0.5ha (sieve before "
                      "polygonizing).")(fn)
    return click.option("--vector", type=click.Choice(["gpkg", "parquet", "fgb", "geojson"]),
                        help="Also write land-cover polygons OUT/landcover.<format> (see 'geoseg vectorize').")(fn)
