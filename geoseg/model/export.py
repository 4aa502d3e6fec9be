"""Exported graphs of a model package (ONNX, OpenVINO IR), made once and cached.

The graph is the network followed by a softmax over classes, exported from the
package's safetensors weights (:func:`geoseg.model.package.load_model`, never a
pickle) with dynamic batch, height and width.  The cache lives in
``<package>/.cache/`` when the package folder is writable, else in
``$XDG_CACHE_HOME/geoseg`` (``~/.cache/geoseg``); file names carry the runtime,
its format version and the weights' SHA-256, and each file has a ``.sha256``
sidecar written last: a file whose sidecar is missing or does not match is
rebuilt, never trusted.  Only building imports torch; finding and checking a
cached file does not.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from geoseg._util.atomic import atomic_write_text, publish, remove_quietly, temp_path
from geoseg._util.lock import file_lock
from geoseg.errors import ParameterError
from geoseg.model.package import WEIGHTS_NAME, resolve

#: ONNX opset of the exported graph (part of the cache key: a new opset is a new file).
ONNX_OPSET = 17
#: Counts of graphs built in this process, by kind (tests check that a cache hit builds nothing).
EXPORTS: dict[str, int] = {"onnx": 0, "openvino": 0}


def weights_path(ref: str | os.PathLike) -> Path:
    path = resolve(ref)
    return path / WEIGHTS_NAME if path.is_dir() else path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return _sha256(Path(path))


def weights_sha256(ref: str | os.PathLike) -> str:
    """SHA-256 of a package's weights file (hashed once per process per file version)."""
    w = weights_path(ref)
    st = w.stat()
    return _sha256_cached(str(w.resolve()), st.st_mtime_ns, st.st_size)


def graph_key(ref: str | os.PathLike) -> str:
    """What a cached graph is keyed by: the weights' SHA-256 and the card's (its architecture, bands and classes
    shape the graph; a card edited beside unchanged weights must not reuse a graph made for the old one)."""
    h = hashlib.sha256(weights_sha256(ref).encode())
    path = resolve(ref)
    card = path / "geoseg-model.json" if path.is_dir() else None  # a single .safetensors file holds its card
    if card is not None and card.is_file():
        h.update(card.read_bytes())
    return h.hexdigest()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoseg"


def cache_dir(ref: str | os.PathLike) -> Path:
    """``<package>/.cache`` when the package is a writable folder, else the user cache dir."""
    path = resolve(ref)
    if path.is_dir():
        inside = path / ".cache"
        if (inside.is_dir() and os.access(inside, os.W_OK)) or (not inside.exists() and os.access(path, os.W_OK)):
            return inside
    return user_cache_dir()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _digest(files: list[Path]) -> str:
    return " ".join(_sha256(f) for f in files)


def _valid(files: list[Path]) -> bool:
    side = _sidecar(files[0])
    if not (side.exists() and all(f.exists() for f in files)):
        return False
    try:
        return side.read_text().strip() == _digest(files)
    except OSError:
        return False


def _build_onnx(ref: str | os.PathLike, out: Path) -> None:
    """Export net + softmax to ``out`` (atomically: temp file, then rename)."""
    import torch

    from geoseg.model.package import load_model

    card, net = load_model(ref)
    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    size = max(card.output_stride, 1) * 16
    x = torch.zeros(1, card.in_channels, size, size)
    tmp = temp_path(out)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                model, (x,), str(tmp), input_names=["x"], output_names=["probs"], opset_version=ONNX_OPSET,
                dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                              "probs": {0: "batch", 2: "height", 3: "width"}},
                dynamo=False,
            )
        publish(tmp, out)
    finally:
        remove_quietly(tmp)
    EXPORTS["onnx"] += 1


def _build_openvino(onnx_path: Path, xml: Path) -> None:
    """Convert the ONNX graph to OpenVINO IR (weights kept f32), ``.bin`` published before ``.xml``."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    tmp = temp_path(xml)
    tmp_bin = tmp.with_suffix(".bin")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        publish(tmp_bin, xml.with_suffix(".bin"))
        publish(tmp, xml)
    finally:
        remove_quietly(tmp, tmp_bin)
    EXPORTS["openvino"] += 1


def _cached(files: list[Path], build: Callable[[], None]) -> Path:
    """``files[0]`` once it and its sidecar agree; built (under a lock) otherwise."""
    if _valid(files):
        return files[0]
    files[0].parent.mkdir(parents=True, exist_ok=True)
    with file_lock(files[0].with_name("." + files[0].name + ".lock")):
        if not _valid(files):  # another process may have built it while we waited
            remove_quietly(_sidecar(files[0]), *files)
            build()
            atomic_write_text(_sidecar(files[0]), _digest(files) + "\n")
    return files[0]


def onnx_file(ref: str | os.PathLike) -> Path:
    """The cached ONNX graph of a package (built on first use, rebuilt when stale or corrupt)."""
    sha = graph_key(ref)
    out = cache_dir(ref) / f"onnx-op{ONNX_OPSET}-{sha[:16]}.onnx"
    return _cached([out], lambda: _build_onnx(ref, out))


def openvino_file(ref: str | os.PathLike) -> Path:
    """The cached OpenVINO IR (``.xml``; ``.bin`` beside it), keyed by OpenVINO's version."""
    import openvino as ov

    sha = graph_key(ref)
    version = ov.get_version().split("-")[0]
    xml = cache_dir(ref) / f"openvino-{version}-{sha[:16]}.xml"
    return _cached([xml, xml.with_suffix(".bin")], lambda: _build_openvino(onnx_file(ref), xml))


def graph_file(ref: str | os.PathLike, runtime: str) -> Path:
    """The cached graph that ``runtime`` (``onnxruntime`` or ``openvino``) loads for a package."""
    if runtime == "onnxruntime":
        return onnx_file(ref)
    if runtime == "openvino":
        return openvino_file(ref)
    raise ParameterError(f"graph_file: {runtime!r} runs no exported graph; use onnxruntime or openvino")
