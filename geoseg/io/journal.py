"""The block journal of a run: every finished output block is a durable file, so a killed run resumes.

``OUT/.geoseg-journal/<key>/`` holds ``manifest.json`` (the run's fingerprint: the input files' sizes and
modification times, the model's weights and card, every option that changes the output) and one
``block-<index>.tif`` per finished output block: all of the block's product bands (uint8, DEFLATE), and
its histogram and cloud count as the tag ``GEOSEG_BLOCK``.  A task writes its block through
:func:`geoseg._util.atomic.atomic_path` (a temporary beside it, fsynced, renamed, the folder fsynced), so a
block file that exists is complete, after a SIGKILL or a power loss too; no lock is needed, on one host or
many sharing a file system, and a task run twice (a lost worker's task rerun elsewhere) writes the same
bytes twice.

The ``<key>`` folder is named by the fingerprint: a run with another fingerprint never reads (or writes
into) an older run's blocks, and removes them with a note; a task still running for a killed run of the
same fingerprint writes what the new run would.  The products are assembled from the block files by the
parent (a VRT mosaic -> the COG driver, :func:`geoseg.io.output.mosaic_vrt`).  No torch, no dask.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geoseg._util.atomic import atomic_path, atomic_write_text
from geoseg.io.grid import BLOCK_ALIGN

JOURNAL = ".geoseg-journal"
MANIFEST = "manifest.json"
FORMAT = 1
_TAG = "GEOSEG_BLOCK"


def input_files(path: str) -> list[str]:
    """The files a scene is read from: the file, a folder's files, or a STAC Item and its local assets."""
    p = Path(path)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.is_file())
    files = [str(p)]
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return files
        for asset in (doc.get("assets") or {}).values() if isinstance(doc, dict) else []:
            href = asset.get("href") if isinstance(asset, dict) else None
            if isinstance(href, str) and "://" not in href:
                local = Path(href) if os.path.isabs(href) else p.parent / href
                if local.is_file():
                    files.append(str(local.resolve()))
    return files


def file_stats(paths: Iterable[str]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each existing file, sorted and without repeats: what a fingerprint of
    files holds (a changed file changes its size or modification time)."""
    out = []
    for f in sorted({os.path.abspath(p) for p in paths}):
        try:
            st = os.stat(f)
        except OSError:
            continue
        if os.path.isfile(f):
            out.append([f, st.st_size, st.st_mtime_ns])
    return out


def fingerprint(fields: dict[str, Any]) -> str:
    """SHA-256 of ``fields`` as canonical JSON."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class BlockMeta:
    """What a finished block's file records besides its pixels: its class-code histogram (256 bins) and the
    pixels left out as cloud."""

    hist: np.ndarray
    cloud_pixels: int

    def to_tag(self) -> str:
        nz = np.flatnonzero(self.hist)
        return json.dumps({"hist": {str(int(i)): int(self.hist[i]) for i in nz}, "cloud_pixels": self.cloud_pixels})

    @classmethod
    def from_tag(cls, text: str) -> BlockMeta:
        doc = json.loads(text)
        hist = np.zeros(256, dtype=np.int64)
        for k, v in doc["hist"].items():
            hist[int(k)] = int(v)
        return cls(hist, int(doc["cloud_pixels"]))


def block_name(index: int) -> str:
    return f"block-{index:06d}.tif"


def output_dir_of(journal_dir: str | os.PathLike) -> str:
    """The output folder ``OUT`` of a journal folder ``OUT/.geoseg-journal/<fingerprint>`` (what messages name)."""
    return str(Path(journal_dir).absolute().parent.parent)


def write_block_file(folder: str, index: int, bands: np.ndarray, meta: BlockMeta) -> str:
    """Write one finished block (``(bands, h, w)`` uint8) durably as ``folder/block-<index>.tif``.

    ``folder`` must exist (a run that replaced the journal removed it: a stale task then fails instead of
    writing into the new run's blocks)."""
    count, h, w = bands.shape
    path = Path(folder) / block_name(index)
    profile = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": "uint8", "tiled": True,
               "blockxsize": BLOCK_ALIGN, "blockysize": BLOCK_ALIGN, "compress": "deflate", "predictor": 2,
               "interleave": "band"}
    with atomic_path(path, space_errors_raw=True) as tmp, warnings.catch_warnings():  # callers: io.space.writing
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(bands)
            dst.update_tags(**{_TAG: meta.to_tag()})
    return str(path)


def read_block_meta(path: str | os.PathLike) -> BlockMeta | None:
    """A block file's :class:`BlockMeta`, or None if it cannot be read (then the block is computed again)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return BlockMeta.from_tag(src.tags()[_TAG])
    except (rasterio.errors.RasterioError, KeyError, ValueError, TypeError):
        return None


class BlockJournal:
    """The journal folder of one run's fingerprint in ``OUT``: opened by the parent (which holds the output
    folder's lock), written into by the block tasks, read back by a rerun."""

    def __init__(self, out_dir: str | os.PathLike, fields: dict[str, Any]) -> None:
        self.root = Path(out_dir) / JOURNAL
        self.fields = json.loads(json.dumps(fields, sort_keys=True, default=str))  # as the manifest reads back
        self.key = fingerprint(fields)
        self.dir = self.root / self.key[:16]

    def open(self) -> str | None:
        """Create (or keep) this fingerprint's folder; remove other fingerprints' folders and stale temporaries.
        Returns a note when an earlier run's blocks were discarded (what changed), else None."""
        note = None
        for other in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            if other == self.dir:
                continue
            if other.is_dir():
                n = len(list(other.glob("block-*.tif")))
                if n:
                    changed = _changed(_read_fields(other), self.fields)
                    note = (f"{n} finished blocks of an earlier, interrupted run in {self.root.parent} were made with "
                            f"other {changed or 'inputs or options'}: discarded, the scene is predicted afresh")
                shutil.rmtree(other, ignore_errors=True)
            else:
                other.unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*"):  # atomic writes a kill interrupted
            stale.unlink(missing_ok=True)
        manifest = self.dir / MANIFEST
        if _read_fields(self.dir) != self.fields:
            for old in self.dir.glob("block-*.tif"):  # no manifest (killed while opening): nothing to trust
                old.unlink()
            atomic_write_text(manifest, json.dumps({"format": FORMAT, "fingerprint": self.key,
                                                    "fields": self.fields}, indent=1, default=str) + "\n")
        return note

    def block_path(self, index: int) -> Path:
        return self.dir / block_name(index)

    def finished(self, indices: Sequence[int]) -> dict[int, BlockMeta]:
        """The blocks of ``indices`` that an earlier run of this fingerprint finished, with their records."""
        out = {}
        for i in indices:
            p = self.block_path(i)
            if p.is_file():
                meta = read_block_meta(p)
                if meta is not None:
                    out[i] = meta
        return out

    def has_blocks(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("block-*.tif"))

    def remove(self) -> None:
        """Remove the whole journal (the run is published, or its result can never change)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _read_fields(folder: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("fields"), dict):
        return None
    return doc["fields"]


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """The top-level fingerprint fields that differ (``scene``, ``model``, ``tta``...), as words."""
    if old is None:
        return ""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys)
