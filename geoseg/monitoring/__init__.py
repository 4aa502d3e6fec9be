"""Scheduled forest-loss monitoring over areas of interest (``geoseg monitor run``).

Rooms, top to bottom: ``api`` (:func:`run_monitor`, the run-level index), ``run`` (one AOI's run: lock,
reconcile, apply each pending scene block by block, deliver), ``patches`` (alert patches found block by block,
merged across seams), ``alerts`` (alert records and their outputs), ``observation`` (the AOI grid and one
scene's forest observation on it), ``state_file`` (``state.tif``, read and written by block; the commit
record), ``ledger`` (``ledger.sqlite``), ``rasters`` (GeoTIFFs on the AOI grid, written block by block),
``config`` (the YAML config) and ``state`` (the per-pixel alert state machine, pure numpy).
"""

from geoseg.monitoring.api import run_monitor

__all__ = ["run_monitor"]
