"""Running a model package on normalised tile batches, on the runtime chosen for the device.

One predictor per (package, device, runtime, precision, threads) per process,
cached, so dask tasks that receive only a path do not reload weights (or rebuild
an inference session) for every batch.  Importing this module does not import
torch: the torch runtime (:mod:`geoseg.model.torch_backend`) is imported when it
is used, so ONNX Runtime / OpenVINO workers never load it.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import ParameterError
from geoseg.model import backends
from geoseg.model.backends import (
    PRECISIONS,
    RUNTIMES,
    build_predictor,
    check_precision,
    openvino_default_precision,
    resolve_runtime,
    runtime_version,
)

if TYPE_CHECKING:  # pragma: no cover
    from geoseg.model.torch_backend import Predictor

__all__ = ["BATCH_SIZES", "DEVICES", "PRECISIONS", "RUNTIMES", "TTA_MODES", "Predictor", "RuntimeChoice",
           "choose_runtime", "configure_threads", "get_predictor", "predict_tta", "prepare_graph", "resolve_runtime",
           "select_device"]

DEVICES = ("auto", "cpu", "cuda")
TTA_MODES = ("none", "flips", "d4")
# (quarter turns, mirror left-right) of each test-time augmentation
_TTA = {
    "none": [(0, False)],
    "flips": [(0, False), (0, True), (2, False), (2, True)],  # identity, lr, ud (=rot180+lr), rot180
    "d4": [(k, f) for k in range(4) for f in (False, True)],
}


def predict_tta(predictor: Any, x: np.ndarray, mode: str = "none") -> np.ndarray:
    """Probabilities averaged over flipped/rotated copies of ``x``, each mapped back before averaging.

    ``x``: (B, C, H, W).  Rotations keep H and W multiples of the output stride, so
    every copy keeps the tile's pixel phase.
    """
    if mode not in _TTA:
        raise ParameterError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")
    acc: np.ndarray | None = None
    for k, mirror in _TTA[mode]:
        xt = np.rot90(x, k, axes=(2, 3))
        if mirror:
            xt = xt[..., ::-1]
        y = predictor(np.ascontiguousarray(xt))
        if mirror:
            y = y[..., ::-1]
        y = np.rot90(y, -k, axes=(2, 3))
        acc = y.copy() if acc is None else acc + y
    assert acc is not None
    acc /= len(_TTA[mode])
    return acc


def select_device(name: str = "auto") -> Any:  # a torch.device
    """``auto`` is CUDA when available, else CPU; ``cuda`` / ``cuda:N`` fail clearly without a GPU."""
    from geoseg.model.torch_backend import select_device as select

    return select(name)


def __getattr__(name: str) -> Any:
    if name == "Predictor":  # the torch Predictor, importable from here as before
        from geoseg.model.torch_backend import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_threads: int | None = None


def configure_threads(n_threads: int) -> None:
    """Intra-op threads for this process (torch, and the ONNX Runtime / OpenVINO sessions made after it)."""
    global _threads
    _threads = max(1, int(n_threads))
    if "torch" in sys.modules:
        from geoseg.model.torch_backend import set_threads

        set_threads(_threads)


def _threads_now() -> int:
    return _threads if _threads is not None else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime: float, device: str, amp: bool | None, runtime: str, precision: str,
            threads: int) -> Any:
    if runtime == "torch":
        from geoseg.model.torch_backend import set_threads, torch_predictor

        if _threads is not None:
            set_threads(_threads)
        return torch_predictor(path, device, amp, precision=precision)
    return build_predictor(path, runtime, precision, threads)


_cache_lock = threading.Lock()


def get_predictor(path: str, device: str, amp: bool | None = None, runtime: str = "torch",
                  precision: str = "f32") -> Any:
    """The process-wide predictor for a package path (reloaded if the package changed on disk).

    ``runtime``: ``auto``, ``torch`` (the default: today's path), ``onnxruntime`` or
    ``openvino``; ``precision``: ``f32``, ``bf16`` (OpenVINO or torch on a CPU with native BF16) or
    ``auto`` (:func:`geoseg.model.backends.check_precision`); a torch ``amp-*`` precision is its AMP (``amp``).
    The result is called as ``predictor(x)`` -> probabilities and has ``.card``,
    ``.runtime`` and ``.precision``.
    """
    concrete = resolve_runtime(runtime, device)
    prec = check_precision(precision, concrete, "cuda" if device.lower().startswith("cuda") else "cpu")
    mtime = os.stat(path).st_mtime
    threads = 0 if concrete == "torch" else _threads_now()
    with _cache_lock:
        return _cached(os.path.abspath(path), mtime, device, amp, concrete, prec, threads)


#: Tiles per forward call on the CPU by (runtime, precision), where the bare-forward figures of
#: benchmarks/runtimes.py on 512² tiles favoured a size over the default 2 (docs/runtimes.md); CUDA: 8.
#: A fixed table, not a calibration at run start: on a shared machine a few timed forwards mislead more
#: than they measure, and larger batches only add activation memory where they are not faster.
BATCH_SIZES: dict[tuple[str, str], int] = {("torch", "f32"): 4, ("torch", "bf16"): 4}


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a run uses, decided once before any work: what was asked and what runs."""

    requested: str  # auto, torch, onnxruntime, openvino
    runtime: str  # the concrete runtime
    precision: str  # f32, bf16 (OpenVINO, torch on the CPU), amp-bf16 / amp-f16 (torch on CUDA with AMP)
    device: str  # cpu, cuda:N
    version: str
    graph: str | None = None  # the exported graph's file name (ONNX Runtime, OpenVINO)
    requested_precision: str = "f32"  # what was asked: auto, f32, bf16
    cpu_bf16: bool = False  # the CPU has native BF16 (avx512_bf16 / amx_bf16), read at run time
    #: the runtime's settings that decide the arithmetic, as (name, value) pairs: OpenVINO's
    #: INFERENCE_PRECISION_HINT (always set) and what OpenVINO would have picked unasked; torch's
    #: channels_last and CPU autocast
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def batch_size(self) -> int:
        """The default tiles per forward call for this runtime and precision (:data:`BATCH_SIZES`)."""
        if self.device_type != "cpu":
            return 8
        return BATCH_SIZES.get((self.runtime, self.precision), 2)

    def to_json(self) -> dict:
        out = asdict(self)
        out["settings"] = dict(self.settings)
        return out


def choose_runtime(runtime: str = "auto", device: str = "auto", precision: str = "f32",
                   amp: bool | None = None) -> RuntimeChoice:
    """Resolve runtime, device and precision (one-line ParameterErrors listing the choices); exports nothing.

    torch is imported only when the torch runtime is chosen (``auto`` on a machine without a CUDA driver
    picks a CPU runtime without importing it).
    """
    concrete = resolve_runtime(runtime, device)
    settings: dict[str, Any] = {}
    if concrete == "torch":
        from geoseg.model.torch_backend import CPU_CHANNELS_LAST, amp_precision

        dev = str(select_device(device))
        prec = check_precision(precision, concrete, "cuda" if dev.startswith("cuda") else "cpu")
        if dev.startswith("cuda"):
            prec = amp_precision(dev, amp)
        else:
            settings = {"channels_last": CPU_CHANNELS_LAST or prec == "bf16",
                        "autocast": "bf16" if prec == "bf16" else None}
    else:
        dev = "cpu"
        prec = check_precision(precision, concrete, "cpu")
        if concrete == "openvino":
            settings = {"INFERENCE_PRECISION_HINT": prec, "openvino_default": openvino_default_precision()}
    return RuntimeChoice((runtime or "auto").lower(), concrete, prec, dev, runtime_version(concrete),
                         requested_precision=(precision or "f32").lower(), cpu_bf16=backends.cpu_has_bf16(),
                         settings=tuple(settings.items()))


def prepare_graph(path: str | os.PathLike, choice: RuntimeChoice) -> RuntimeChoice:
    """Export (or find cached) the graph ``choice`` loads, so tasks and workers only load it; ``choice`` with
    the graph's file name.  torch is imported only when the graph has to be built."""
    if choice.runtime == "torch":
        return choice
    from geoseg.model.export import graph_file

    return replace(choice, graph=graph_file(path, choice.runtime).name)
