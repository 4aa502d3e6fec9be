"""``predict_batch``: many scenes into one output folder, resumable and fault-isolated (``geoseg predict A B C``).

Scenes: paths (rasters or products), glob patterns, ``@list.txt`` files of paths (one a line, ``#`` comments),
and STAC ItemCollections (local JSON: each Item is one scene, read with the STAC Item reader).  Each scene is
predicted by :func:`~geoseg.predict.api.predict_scene` in its own CRS and grid into ``OUT/<scene id>/``.

``OUT/index.json`` records, per scene id, its input, status (``done``/``failed``), the error of a failure, the
outputs and a fingerprint of the inputs (sizes and modification times of the scene's files), the model (its
weights' and card's key) and the options.  A rerun skips the scenes done with the same fingerprint, leaves the
failed ones alone unless ``retry_failed``, and predicts the rest; a failing scene never stops the others.  The
index is rewritten atomically after every scene and the folder is locked for the run (a second run: exit 75).
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg._util.atomic import atomic_write_text
from geoseg._util.lock import file_lock
from geoseg.errors import GeosegError, InputError, InputFileError, OutputLockedError
from geoseg.io.journal import input_files

__all__ = ["BatchResult", "expand_scenes", "predict_batch", "is_batch"]

INDEX = "index.json"
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Scene:
    id: str
    path: str  # what predict_scene reads (an Item of a collection: its JSON written under OUT/.items/)
    origin: str  # what the user gave


@dataclass
class BatchResult:
    out_dir: str
    index: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _is_collection(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "FeatureCollection"


def is_batch(scenes: Sequence[str]) -> bool:
    """Whether ``scenes`` asks for a batch run: several, a glob, a ``@list``, or an ItemCollection."""
    if len(scenes) != 1:
        return True
    s = scenes[0]
    return (bool(_GLOB.search(s)) and not os.path.exists(s)) or s.startswith("@") or _is_collection(Path(s))


def _scene_id(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".zip", ".SAFE", ".json", ".tif", ".tiff", ".vrt", ".jp2"):
        if name.lower().endswith(suffix.lower()):
            name = name[: -len(suffix)]
    if name.lower() == "item":  # item.json in a folder of its own: the folder names the scene
        name = Path(path).parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scene"


def _absolute_hrefs(item: dict, base: Path) -> dict:
    assets = {}
    for key, asset in (item.get("assets") or {}).items():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            href = asset["href"]
            local = href[7:] if href.startswith("file://") else href
            if "://" not in local and not os.path.isabs(local):
                asset = {**asset, "href": str((base / local).resolve())}
        assets[key] = asset
    return {**item, "assets": assets}


def _collection(path: Path, staging: Path) -> list[Scene]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    items = doc.get("features")
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: a STAC ItemCollection without features; give one with at least one Item")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "Feature":
            raise InputError(f"{path}: feature #{i + 1} is not a STAC Item; fix the ItemCollection")
        sid = re.sub(r"[^A-Za-z0-9._-]+", "_", str(item.get("id") or f"item-{i + 1}"))
        target = staging / f"{sid}.json"
        staging.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(_absolute_hrefs(item, path.parent), indent=1) + "\n")
        out.append(Scene(sid, str(target), f"{path}#{sid}"))
    return out


def expand_scenes(scenes: Sequence[str], staging: Path) -> list[Scene]:
    """The scenes of ``scenes`` (paths, globs, ``@list`` files, ItemCollections) with unique ids, in order.
    A path that does not exist or a glob that matches nothing is a one-line error (nothing runs)."""
    paths: list[tuple[str, str]] = []  # (path, origin)
    for s in scenes:
        if s.startswith("@"):
            listing = Path(s[1:])
            if not listing.is_file():
                raise InputFileError(f"scene list {listing} does not exist; give @FILE with one scene path a line")
            for line in listing.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    p = line if os.path.isabs(line) else str(listing.parent / line)
                    paths.append((p, f"{s}: {line}"))
        elif _GLOB.search(s) and not os.path.exists(s):
            hits = sorted(globlib.glob(s))
            if not hits:
                raise InputFileError(f"no scene matches {s!r}; check the pattern (quote it so the shell leaves it)")
            paths += [(h, h) for h in hits]
        else:
            paths.append((s, s))
    out: list[Scene] = []
    for p, origin in paths:
        if not os.path.exists(p):
            raise InputFileError(f"scene {p} does not exist ({origin}); fix the list")
        if _is_collection(Path(p)):
            out += _collection(Path(p), staging)
        else:
            out.append(Scene(_scene_id(p), p, origin))
    seen: dict[str, int] = {}
    unique = []
    for sc in out:
        n = seen.get(sc.id, 0)
        seen[sc.id] = n + 1
        sid = sc.id if n == 0 else f"{sc.id}-{hashlib.sha1(sc.path.encode()).hexdigest()[:8]}"
        unique.append(Scene(sid, sc.path, sc.origin))
    return unique


def fingerprint(path: str, model_key: str, options: dict[str, Any]) -> str:
    """What a finished scene is kept for: its files' sizes and modification times, the model and the options."""
    h = hashlib.sha256(model_key.encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    for f in input_files(path):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"scenes": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{path} is not a geoseg run index (not valid JSON); move it away to start afresh") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenes"), dict):
        raise InputError(f"{path} is not a geoseg run index; move it away to start afresh")
    return doc


def _model_key(model: str | os.PathLike) -> str:
    from geoseg.model.export import graph_key
    from geoseg.model.package import read_card, resolve

    path = resolve(model)
    return f"{read_card(path).id}:{graph_key(path)}"


# long: the per-scene loop with its bookkeeping (skip, run, record, atomically rewrite the index) in order
def predict_batch(scenes: Sequence[str], model: str | os.PathLike = "default", out_dir: str | os.PathLike = "out",
                  *, retry_failed: bool = False, say: Callable[[str], None] | None = None,
                  **options: Any) -> BatchResult:
    """Predict every scene of ``scenes`` into ``out_dir/<scene id>/`` (see the module docstring); ``options`` go
    to :func:`~geoseg.predict.api.predict_scene` (``overwrite`` included: a scene whose folder holds another
    run's outputs fails without it).  ``say`` gets one line per scene (the CLI prints them on stderr)."""
    from geoseg.predict.api import predict_scene

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    say = say or (lambda line: None)

    def busy() -> OutputLockedError:
        return OutputLockedError(f"another geoseg batch run is writing into {out}; wait for it or choose another -o")

    with file_lock(out / ".geoseg-batch.lock", wait=False, busy=busy):
        todo = expand_scenes(scenes, out / ".items")
        model_key = _model_key(model)
        keyed = {k: v for k, v in options.items() if k not in ("progress", "overwrite", "resume", "client")}
        index = _read_index(index_path)
        index.update(model=str(model), model_key=model_key, options=keyed)
        result = BatchResult(str(out), str(index_path))
        for n, sc in enumerate(todo, 1):
            fp = fingerprint(sc.path, model_key, keyed)
            prior = index["scenes"].get(sc.id, {})
            done = prior.get("status") == "done" and (out / sc.id / "run.json").is_file()
            if prior.get("fingerprint") == fp and (done or (prior.get("status") == "failed" and not retry_failed)):
                result.skipped.append(sc.id)
                say(f"[{n}/{len(todo)}] {sc.id}: {prior['status']} before, skipped")
                continue
            entry: dict[str, Any] = {"input": sc.origin, "path": sc.path, "fingerprint": fp}
            t1 = time.perf_counter()
            try:
                res = predict_scene(sc.path, model, out / sc.id, **options)
            except (GeosegError, OSError, ValueError, RuntimeError) as exc:  # this scene only: the others go on
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                entry.update(status="failed", error=f"{type(exc).__name__}: {message}")
                result.failed[sc.id] = entry["error"]
                say(f"[{n}/{len(todo)}] {sc.id}: FAILED {entry['error']}")
            else:
                entry.update(status="done", run_id=res.run_id, outputs=os.path.relpath(res.out_dir, out),
                             nodata_pixels=res.nodata_pixels, cloud_pixels=res.cloud_pixels)
                result.done.append(sc.id)
                say(f"[{n}/{len(todo)}] {sc.id}: done in {time.perf_counter() - t1:.1f} s")
            entry["seconds"] = round(time.perf_counter() - t1, 3)
            entry["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            index["scenes"][sc.id] = entry
            atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
        if not index_path.exists():
            atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    result.seconds = time.perf_counter() - t0
    return result
