"""The torch runtime: a loaded network run eagerly (``inference_mode``; channels_last on the CPU, with bf16
autocast at ``precision="bf16"``; AMP and pinned memory on CUDA).  Imported only when the torch runtime is
used (:mod:`geoseg.model.runtime` is torch-free at import)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from geoseg.errors import ParameterError
from geoseg.model.card import ModelCard

#: channels_last on the CPU by default: faster than contiguous NCHW, equal to it within f32 round-off (not
#: bit-identical; measured in docs/runtimes.md); ``Predictor(channels_last=False)`` for the old bytes.
CPU_CHANNELS_LAST = True


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

    runtime = "torch"

    def __init__(self, card: ModelCard, net: torch.nn.Module, device: torch.device, amp: bool | None = None,
                 channels_last: bool | None = None, precision: str = "f32"):
        self.card = card
        self.device = device
        if precision not in ("f32", "bf16") or (precision == "bf16" and device.type != "cpu"):
            raise ParameterError(f"torch Predictor: precision {precision!r} on {device.type}; use f32 (or bf16 "
                                 "on the CPU; CUDA uses AMP)")
        #: bf16: the CPU forward runs under bf16 autocast (channels_last), softmax in f32
        self.cpu_bf16 = precision == "bf16"
        self.precision = precision
        self.channels_last = ((device.type == "cpu" and CPU_CHANNELS_LAST) or self.cpu_bf16) \
            if channels_last is None else channels_last
        net = net.to(device).eval()
        self.net = net.to(memory_format=torch.channels_last) if self.channels_last else net
        self.amp = (device.type == "cuda") if amp is None else (amp and device.type == "cuda")
        self.amp_dtype = (
            torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
        )
        if self.amp:
            self.precision = "amp-" + ("bf16" if self.amp_dtype == torch.bfloat16 else "f16")
        # One forward at a time per process and device.  On the CPU the forward pass uses every
        # intra-op thread, so concurrent forwards would only multiply activation memory; the
        # other dask threads meanwhile read, blend and write.  On CUDA it serialises the stream.
        # Reentrant: a caller may hold it across several forwards (see geoseg.predict.tasks).
        self.lock = threading.RLock()

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: (B, C, H, W) float32 normalised input -> (B, K, H, W) float32 probabilities."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
            with self.lock:
                with torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.amp):
                    logits = self.net(t)
                probs = torch.softmax(logits.float(), dim=1)
                return probs.cpu().numpy()
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with self.lock:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
                logits = self.net(t)
            return np.ascontiguousarray(torch.softmax(logits.float(), dim=1).numpy())


def amp_precision(device: str, amp: bool | None) -> str:
    """What :class:`Predictor` runs at on ``device``: ``f32``, or ``amp-bf16``/``amp-f16`` on CUDA with AMP."""
    dev = torch.device(device)
    if dev.type != "cuda" or amp is False:
        return "f32"
    return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-f16"


def cuda_available() -> bool:
    return bool(torch.cuda.is_available())


def set_threads(n: int) -> None:
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def torch_predictor(path: str, device: str, amp: bool | None, channels_last: bool | None = None,
                    precision: str = "f32") -> Predictor:
    from geoseg.model.package import load_model

    card, net = load_model(path)
    return Predictor(card, net, torch.device(device), amp, channels_last, precision)
