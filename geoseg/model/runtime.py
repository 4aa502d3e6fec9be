"""Running a loaded model on normalised tile batches: device choice, AMP, pinned memory.

One :class:`Predictor` per (package, device) per process, cached, so dask tasks
that receive only a path do not reload weights for every batch.
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np
import torch

from geoseg.errors import ParameterError
from geoseg.model.card import ModelCard
from geoseg.model.package import load_model

DEVICES = ("auto", "cpu", "cuda")
TTA_MODES = ("none", "flips", "d4")
# (quarter turns, mirror left-right) of each test-time augmentation
_TTA = {
    "none": [(0, False)],
    "flips": [(0, False), (0, True), (2, False), (2, True)],  # identity, lr, ud (=rot180+lr), rot180
    "d4": [(k, f) for k in range(4) for f in (False, True)],
}


def predict_tta(predictor: Predictor, x: np.ndarray, mode: str = "none") -> np.ndarray:
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


def select_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cuda`` / ``cuda:N`` fail clearly without a GPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("--device cuda was requested but no CUDA device is available; use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ParameterError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..."
            )
        return dev
    raise ParameterError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")


class Predictor:
    """Softmax probabilities for batches of normalised tiles, on one device."""

    def __init__(self, card: ModelCard, net: torch.nn.Module, device: torch.device, amp: bool | None = None):
        self.card = card
        self.device = device
        self.net = net.to(device).eval()
        self.amp = (device.type == "cuda") if amp is None else (amp and device.type == "cuda")
        self.amp_dtype = (
            torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        )
        # One forward at a time per process and device.  On the CPU the forward pass uses every
        # intra-op thread, so concurrent forwards would only multiply activation memory; the
        # other dask threads meanwhile read, blend and write.  On CUDA it serialises the stream.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: (B, C, H, W) float32 normalised input -> (B, K, H, W) float32 probabilities."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
            with self._lock:
                with torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp):
                    logits = self.net(t)
                probs = torch.softmax(logits.float(), dim=1)
                return probs.cpu().numpy()
        with self._lock:
            logits = self.net(t)
            return torch.softmax(logits.float(), dim=1).numpy()


def configure_threads(n_threads: int) -> None:
    """Torch intra-op threads for this process (called once per worker process/scheduler)."""
    n = max(1, int(n_threads))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime: float, device: str, amp: bool | None) -> Predictor:
    card, net = load_model(path)
    return Predictor(card, net, torch.device(device), amp)


_cache_lock = threading.Lock()


def get_predictor(path: str, device: str, amp: bool | None = None) -> Predictor:
    """The process-wide Predictor for a package path (reloaded if the package changed on disk)."""
    mtime = os.stat(path).st_mtime
    with _cache_lock:
        return _cached(os.path.abspath(path), mtime, device, amp)
