"""All errors geoseg raises on purpose.

Every class also inherits the matching builtin, so callers can catch either
``geoseg.errors.InputFileError`` or plain ``FileNotFoundError``.  Messages are one
line that names the problem *and* the fix; the CLI prints them without a
traceback and exits with :attr:`GeosegError.exit_code`.

Exit codes (documented in the README):

==  ===================================================

1   unexpected failure (a bug: please report it with the traceback)
2   command-line usage error (click)
3   bad input data (scene, bands, georeference, empty scene)
4   bad or corrupt model package
5   output problem (exists without --overwrite, not writable, disk full)
71  a worker process was killed, e.g. out of memory (EX_OSERR: free memory or use fewer/smaller tasks)
75  the output is locked by another running geoseg job (EX_TEMPFAIL: retry later)
130 interrupted by Ctrl-C; 143 terminated by SIGTERM (temporary files removed)
==  ===================================================

"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg raises deliberately."""

    exit_code = 1


class InputError(GeosegError, ValueError):
    """The input data cannot be processed as given."""

    exit_code = 3


class InputFileError(InputError, FileNotFoundError):
    """An input path does not exist or is not a readable raster."""


class NotGeoreferencedError(InputError):
    """The raster has no CRS or no geotransform."""


class BandMismatchError(InputError):
    """The input's bands do not match what the model expects."""


class GridMismatchError(InputError):
    """Two rasters that must share a pixel grid do not."""


class EmptySceneError(InputError):
    """The scene has no valid (non-nodata) pixel."""


class ParameterError(GeosegError, ValueError):
    """An option value is invalid (tile size, overlap, blend, device, ...)."""

    exit_code = 2


class ModelPackageError(GeosegError, ValueError):
    """A model package is missing, corrupt or inconsistent."""

    exit_code = 4


class OutputError(GeosegError, OSError):
    """An output cannot be written."""

    exit_code = 5


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class DiskFullError(OutputError):
    """Not enough free space for the outputs (checked before any work), or the disk filled up during the run."""


class WorkerLostError(GeosegError, RuntimeError):
    """A worker process ended abruptly (killed by a signal, e.g. the out-of-memory killer)."""

    exit_code = 71


class OutputLockedError(OutputError, BlockingIOError):
    """Another geoseg run is writing into the same output."""

    exit_code = 75


# -- monitoring (geoseg monitor run) --


class ConfigError(InputError):
    """The monitoring config is invalid."""


class MonitorLockedError(GeosegError, BlockingIOError):
    """Another run holds the lock of an AOI (``geoseg monitor run``)."""

    exit_code = 75


class LateObservationError(GeosegError, ValueError):
    """An observation is older than the last one applied to a monitoring state: replay instead."""


# -- vectorizing (geoseg vectorize) --


class NotAClassRasterError(InputError):
    """The raster is not an integer class raster."""


class MissingDependencyError(OutputError):
    """An optional package needed for the requested output is not installed."""


# -- sources (Sentinel-2 SAFE, STAC Item and Landsat readers) --


class MissingBandError(InputFileError):
    """A product or STAC Item lacks a band file the stack needs (the message names the band)."""


class NotAProductError(InputError):
    """A path that looks like a product (a .zip, a .SAFE, a STAC JSON) is not one geoseg can read."""


class UnreadableBandError(InputError):
    """A band file of a product exists but GDAL cannot read it (truncated, damaged)."""


# -- clouds (product cloud masks, --cloud-mask) --


class CloudMaskError(InputError):
    """A cloud mask (a product's own or ``--cloud-mask RASTER``) cannot be used as given."""


class MissingCloudMaskError(CloudMaskError, InputFileError):
    """The ``--cloud-mask`` raster does not exist."""
