"""``predict_batch``: many scenes into one output folder, resumable and fault-isolated (``geoseg predict A B C``).

Scenes: paths (rasters or products), glob patterns, ``@list.txt`` files of paths (one a line, ``#`` comments),
and STAC ItemCollections (local JSON read with pystac: each Item is one scene, read with the STAC Item reader).
Each scene is predicted by :func:`~geoseg.predict.api.predict_scene` in its own CRS and grid into
``OUT/<scene id>/``.

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

import pystac
from pystac.utils import make_absolute_href

from geoseg._util.atomic import atomic_write_text
from geoseg._util.lock import file_lock
from geoseg.errors import GeosegError, InputError, InputFileError, OutputLockedError
from geoseg.io.journal import input_files

__all__ = ["BatchResult", "expand_scenes", "predict_batch", "is_batch", "outcome", "outcome_text"]

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


def _read_json(path: Path) -> Any:
    """``path``'s JSON as pystac's StacIO reads it, or None when it is not readable JSON."""
    try:
        return pystac.StacIO.default().read_json(str(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_collection(path: Path) -> bool:
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    doc = _read_json(path)
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


def _absolute_hrefs(item: pystac.Item, base: Path) -> dict:
    """``item`` as a dict with every local asset href absolute (pystac's ``make_absolute_href`` against the
    ItemCollection's file), so its staged copy reads from anywhere; ``file://`` and remote hrefs stay."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    for asset in doc.get("assets", {}).values():
        href = asset.get("href")
        if isinstance(href, str) and "://" not in href:
            asset["href"] = str(Path(make_absolute_href(href, str(base / "collection.json"))).resolve())
    return doc


def _collection(path: Path, staging: Path) -> list[Scene]:
    """The Items of the ItemCollection ``path`` (read with pystac), each staged under ``staging`` as one Item
    JSON; a feature that is no STAC Item is a one-line InputError naming it."""
    doc = _read_json(path)
    items = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}: a STAC ItemCollection without features; give one with at least one Item")
    try:
        collection = pystac.ItemCollection.from_dict(doc, preserve_dict=True)
    except (pystac.STACError, KeyError, TypeError, ValueError, AttributeError):
        collection = None
    if collection is None or len(collection) != len(items):
        for i, item in enumerate(items):  # name the first feature pystac refuses
            try:
                if not isinstance(item, dict) or item.get("type") != "Feature":
                    raise TypeError(item)
                pystac.Item.from_dict(item, preserve_dict=True)
            except (pystac.STACError, KeyError, TypeError, ValueError, AttributeError):
                raise InputError(f"{path}: feature #{i + 1} is not a STAC Item; fix the ItemCollection") from None
        raise InputError(f"{path}: not a readable STAC ItemCollection; fix it")
    out = []
    for i, item in enumerate(collection):
        sid = re.sub(r"[^A-Za-z0-9._-]+", "_", str(item.id or f"item-{i + 1}"))
        target = staging / f"{sid}.json"
        staging.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_absolute_hrefs(item, path.parent), indent=1) + "\n"
        if not target.is_file() or target.read_text(encoding="utf-8") != text:  # same Item: same mtime, so a
            atomic_write_text(target, text)  # rerun's fingerprint matches and the finished scene is skipped
        out.append(Scene(sid, str(target), f"{path}#{sid}"))
    return out


def expand_scenes(scenes: Sequence[str], staging: Path) -> list[Scene]:
    """The scenes of ``scenes`` (paths, globs, ``@list`` files, ItemCollections) with unique ids, in order.
    A path given that does not exist or a glob that matches nothing is a one-line error (nothing runs); a line
    of an ``@list`` whose file does not exist is kept, so that scene fails alone (and runs once it is there)."""
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
            if origin.startswith("@"):  # one line of a list: that scene fails in the run, the others go on
                out.append(Scene(_scene_id(p), p, origin))
                continue
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
        try:
            st = os.stat(f)
        except FileNotFoundError:  # a listed scene not there (yet): it fails, and runs once it appears
            h.update(f"{f}\0missing\n".encode())
            continue
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


def outcome(res: Any) -> dict[str, Any]:
    """What a finished scene's summary says (a :class:`~geoseg.predict.api.PredictResult`): its map, seconds,
    the valid share of its pixels and each class's share of the valid pixels (percent, one decimal)."""
    valid = sum(res.class_pixels.values())
    total = valid + res.nodata_pixels
    return {"output": res.landcover, "seconds": round(res.seconds, 3),
            "valid_percent": round(100.0 * valid / total, 1) if total else 0.0,
            "classes": {k: round(100.0 * n / valid, 1) if valid else 0.0 for k, n in res.class_pixels.items()}}


def outcome_text(o: dict[str, Any], top: int = 4) -> str:
    """``-> OUT/landcover.tif in 2.1 s; 92.3 % valid; trees 40.1 %, water 30.0 %, ...`` (the largest classes)."""
    classes = sorted(o["classes"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{k} {v:.1f} %" for k, v in classes[:top] if v > 0) or "no class"
    more = f", +{len(classes) - top} more" if len(classes) > top else ""
    return f"-> {o['output']} in {o['seconds']:.1f} s; {o['valid_percent']:.1f} % valid; {shown}{more}"


# long: the per-scene loop with its bookkeeping (skip, run, record, atomically rewrite the index) in order
def predict_batch(scenes: Sequence[str], model: str | os.PathLike = "default", out_dir: str | os.PathLike = "out",
                  *, retry_failed: bool = False, say: Callable[[str], None] | None = None,
                  on_scene: Callable[[str, dict[str, Any]], None] | None = None, **options: Any) -> BatchResult:
    """Predict every scene of ``scenes`` into ``out_dir/<scene id>/`` (see the module docstring); ``options`` go
    to :func:`~geoseg.predict.api.predict_scene` (``overwrite`` included: a scene whose folder holds another
    run's outputs fails without it).  ``say`` gets one line per scene (the CLI prints them on stderr);
    ``on_scene(scene id, entry)`` gets each scene's index entry (status ``done``, ``failed`` or ``skipped``) as
    soon as it is known (the CLI's ``--log`` JSON lines)."""
    from geoseg.predict.api import predict_scene

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    say = say or (lambda line: None)
    tell = on_scene or (lambda sid, entry: None)

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
                tell(sc.id, {**prior, "status": "skipped", "before": prior.get("status")})
                continue
            entry: dict[str, Any] = {"input": sc.origin, "path": sc.path, "fingerprint": fp}
            t1 = time.perf_counter()
            try:
                res = predict_scene(sc.path, model, out / sc.id, **options)
            except (GeosegError, OSError, ValueError, RuntimeError) as exc:  # this scene only: the others go on
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                entry.update(status="failed", error=f"{type(exc).__name__}: {message}",
                             exit_code=getattr(exc, "exit_code", 1))
                result.failed[sc.id] = entry["error"]
                say(f"[{n}/{len(todo)}] {sc.id}: FAILED {entry['error']}")
            else:
                o = outcome(res)
                entry.update(status="done", run_id=res.run_id, outputs=os.path.relpath(res.out_dir, out),
                             nodata_pixels=res.nodata_pixels, cloud_pixels=res.cloud_pixels,
                             valid_percent=o["valid_percent"], classes=o["classes"])
                result.done.append(sc.id)
                say(f"[{n}/{len(todo)}] {sc.id}: done {outcome_text({**o, 'seconds': time.perf_counter() - t1})}")
            entry["seconds"] = round(time.perf_counter() - t1, 3)
            entry["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            index["scenes"][sc.id] = entry
            atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
            tell(sc.id, entry)
        if not index_path.exists():
            atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    result.seconds = time.perf_counter() - t0
    return result
