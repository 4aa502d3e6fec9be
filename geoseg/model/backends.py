"""Inference runtimes other than torch: ONNX Runtime and OpenVINO on the CPU, and choosing one.

Importing this module, and running a model through ONNX Runtime or OpenVINO
from a cached graph, never imports torch (see :mod:`geoseg.model.export`).
Each predictor has the contract of :class:`geoseg.model.runtime.Predictor`:
``predictor(x)`` with ``x`` (B, C, H, W) float32 normalised -> (B, K, H, W)
float32 softmax probabilities, and ``.card``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import platform
import re
import threading
from pathlib import Path

import numpy as np

from geoseg.errors import ParameterError
from geoseg.model.card import ModelCard
from geoseg.model.package import read_card

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "f32", "bf16")
#: The runtimes that run bf16 on the CPU (OpenVINO's INFERENCE_PRECISION_HINT, torch's CPU autocast).
BF16_RUNTIMES = ("openvino", "torch")
#: What ``--precision auto`` picks per runtime on a CPU with native BF16 (f32 elsewhere), from the figures in
#: docs/runtimes.md: bf16 where it was faster than f32 and its class maps agreed with f32's on >= 99.5 % of the
#: pixels of real scenes.
AUTO_BF16: dict[str, bool] = {"openvino": True, "torch": True}
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def installed_runtimes() -> list[str]:
    """The concrete runtimes importable here (``torch`` first)."""
    return [r for r, mod in _MODULES.items() if importlib.util.find_spec(mod) is not None]


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native BF16 arithmetic on this CPU (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cuda_driver_present() -> bool:
    """Whether the CUDA driver library loads here (loading does not initialise CUDA).  Without it torch
    sees no GPU either, so ``auto`` settles on the CPU without importing torch."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for a device name; ``auto`` asks torch (only where torch and a CUDA driver are)."""
    name = (device or "auto").lower()
    if name == "auto":
        if importlib.util.find_spec("torch") is None or not cuda_driver_present():
            return "cpu"
        from geoseg.model.torch_backend import cuda_available

        return "cuda" if cuda_available() else "cpu"
    return "cuda" if name.startswith("cuda") else name


def resolve_runtime(runtime: str, device: str = "auto") -> str:
    """The concrete runtime for ``runtime`` on ``device``; one-line ParameterError listing the choices.

    ``auto``: torch on CUDA; on the CPU OpenVINO (x86, when installed), else ONNX
    Runtime when installed, else torch.  ONNX Runtime and OpenVINO run on the CPU only.
    """
    name = (runtime or "auto").lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", (device or "auto").lower()):
        raise ParameterError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N")
    have = installed_runtimes()
    if name not in RUNTIMES:
        raise ParameterError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)} "
                             f"(installed here: {', '.join(have)})")
    if name == "auto":
        if _device_type(device) == "cuda":
            return "torch"
        if "openvino" in have and is_x86():
            return "openvino"
        return "onnxruntime" if "onnxruntime" in have else "torch"
    if name not in have:
        raise ParameterError(f"runtime {name} is not installed (pip install 'geoseg[{name.replace('runtime', '')}]'); "
                             f"installed here: {', '.join(['auto', *have])}")
    if name != "torch" and (device or "auto").lower().startswith("cuda"):
        raise ParameterError(f"runtime {name} runs on the CPU only; use --device cpu or --runtime torch")
    return name


def runtime_version(runtime: str) -> str:
    """The version of a concrete runtime (imports it: torch only for ``torch``)."""
    if runtime == "openvino":
        import openvino as ov

        return str(ov.get_version())
    module = importlib.import_module(_MODULES[runtime])
    return str(getattr(module, "__version__", "unknown"))


def check_precision(precision: str, runtime: str, device_type: str = "cpu") -> str:
    """The concrete precision (``f32`` or ``bf16``) for ``precision`` on ``runtime`` / ``device_type``.

    ``f32`` anywhere; ``bf16`` with OpenVINO or torch on a CPU with native BF16 (AVX512-BF16 or AMX, read from
    /proc/cpuinfo at run time); ``auto``: bf16 where that is allowed and :data:`AUTO_BF16` says it measured
    faster at agreeing class maps, else f32.  (On CUDA torch's precision is its AMP, not this.)
    """
    p = (precision or "f32").lower()
    if p.startswith("amp-") and runtime == "torch":  # what RuntimeChoice records for torch with AMP on CUDA
        return "f32"
    if p not in PRECISIONS:
        raise ParameterError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cpu = device_type == "cpu"
    if p == "auto":
        return "bf16" if cpu and AUTO_BF16.get(runtime, False) and cpu_has_bf16() else "f32"
    if p == "bf16":
        if runtime not in BF16_RUNTIMES:
            raise ParameterError(f"--precision bf16 needs --runtime openvino or torch (not {runtime}); "
                                 "use --precision f32")
        if not cpu:
            raise ParameterError("--precision bf16 is for the CPU; on CUDA torch runs mixed precision (AMP) "
                                 "by default: drop --precision, or use --device cpu")
        if not cpu_has_bf16():
            raise ParameterError("--precision bf16 needs a CPU with native BF16 (avx512_bf16 or amx_bf16 "
                                 "in /proc/cpuinfo); this one has neither: use --precision f32 or auto")
    return p


def openvino_default_precision() -> str:
    """The inference precision OpenVINO's CPU plugin would pick here unasked (bf16 on a BF16 CPU; recorded,
    since geoseg always sets the hint explicitly)."""
    import openvino as ov

    return _ov_precision_name(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def _ov_precision_name(value: object) -> str:
    name = str(value.get_type_name() if hasattr(value, "get_type_name") else value).lower()
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(name, name)


class OnnxPredictor:
    """ONNX Runtime, CPU execution provider, ``threads`` intra-op threads."""

    runtime = "onnxruntime"

    def __init__(self, card: ModelCard, graph: Path, threads: int):
        import onnxruntime as ort

        self.card = card
        self.precision = "f32"
        self.graph = graph
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
        self.version = ort.__version__
        # one forward at a time per process, as the torch Predictor; reentrant, so a caller may hold it
        # across several forwards (the test-time augmentations of one batch) and time its wait for it
        self.lock = threading.RLock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.lock:
            (y,) = self.session.run(["probs"], {"x": x})
        return np.asarray(y, dtype=np.float32)


class OpenVinoPredictor:
    """OpenVINO on the CPU, inference precision pinned (``f32`` unless ``bf16`` was asked for)."""

    runtime = "openvino"

    def __init__(self, card: ModelCard, graph: Path, threads: int, precision: str = "f32"):
        import openvino as ov

        self.card = card
        self.precision = precision
        self.graph = graph
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": str(max(1, threads)),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        #: what the compiled model runs at (asked back of OpenVINO, not assumed from the hint)
        self.inference_precision = _ov_precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.version = ov.get_version()
        self.lock = threading.RLock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.lock:
            request = self.compiled.create_infer_request()
            request.infer({0: x})
            y = request.get_output_tensor(0).data
            return np.array(y, dtype=np.float32, copy=True)


def build_predictor(path: str, runtime: str, precision: str, threads: int) -> OnnxPredictor | OpenVinoPredictor:
    """A new ONNX Runtime / OpenVINO predictor for a package (exporting its graph on first use)."""
    from geoseg.model.export import onnx_file, openvino_file

    card = read_card(path)
    if runtime == "onnxruntime":
        return OnnxPredictor(card, onnx_file(path), threads)
    if runtime == "openvino":
        return OpenVinoPredictor(card, openvino_file(path), threads, precision)
    raise ParameterError(f"build_predictor: {runtime!r} is not an exported runtime")
