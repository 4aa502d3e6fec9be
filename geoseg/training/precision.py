"""How a training step computes: numeric precision (fp32, bf16 autocast, CUDA AMP) and memory format.

``precision`` (config key): ``auto`` | ``f32`` | ``bf16``.

* CPU: ``auto`` is bf16 autocast where the CPU does BF16 natively (``avx512_bf16`` or ``amx_bf16`` in
  /proc/cpuinfo, read at run time by :func:`geoseg.model.backends.cpu_has_bf16`), else fp32; ``bf16`` on a
  CPU without native BF16 is an error (PyTorch would emulate it, which is slower than fp32).
* CUDA: ``auto`` is AMP (bf16 where the GPU supports it, else fp16 with a gradient scaler); ``bf16`` is bf16
  AMP (an error on a GPU without bf16).
* ``f32`` is plain fp32 everywhere.

Whatever the precision, the weights (and the optimiser's state) stay fp32 ("master weights"): autocast only
lowers the precision of the forward's matrix products and convolutions, and the loss is computed in fp32 on
fp32 logits.  Validation always runs in fp32 (the card's metrics describe the model as ``geoseg predict``
runs it on a CPU by default).

``memory_format`` (config key): ``auto`` | ``channels_last`` | ``contiguous``: the tensor layout of the steps,
the same numbers up to float rounding (other convolution kernels).  ``auto`` is channels_last (NHWC) on CUDA
and on CPUs with AVX-512 (``avx512f``; 4.4x faster for the default architecture on an AVX-512/BF16 CPU as
measured in issue 17) and contiguous on other CPUs (0.78-1.11x, no gain, on this project's AVX2-only AMD EPYC:
benchmarks/train_throughput.py, docs/model.md "Training speed").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from geoseg.errors import ParameterError
from geoseg.model.backends import cpu_flags, cpu_has_bf16
from geoseg.training.config import MEMORY_FORMATS, PRECISIONS

#: the CPU flags of native BF16 arithmetic (either one is enough)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class StepPrecision:
    """The resolved precision of a run: ``name`` (``f32``, ``bf16``, ``amp-bf16``, ``amp-f16``) on ``device_type``."""

    name: str
    device_type: str
    dtype: torch.dtype | None  # the autocast dtype; None: no autocast
    channels_last: bool = True

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def needs_scaler(self) -> bool:
        """fp16 AMP needs gradient scaling (bf16 has fp32's exponent range and does not)."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def record(self) -> dict[str, str]:
        """What the training record (the card's ``training``, each epoch's log) says about it."""
        return {"precision": self.name, "memory_format": "channels_last" if self.channels_last else "contiguous"}


def _cuda_bf16() -> bool:
    return bool(torch.cuda.is_bf16_supported())


def cpu_has_avx512() -> bool:
    """AVX-512 (foundation) on this CPU, from the same /proc/cpuinfo flags as :func:`cpu_has_bf16`."""
    return "avx512f" in cpu_flags()


def resolve_memory_format(choice: str, device: torch.device, *, avx512: Callable[[], bool] | None = None) -> bool:
    """Whether ``memory_format`` ``choice`` means channels_last on ``device`` (``avx512``: the CPU check)."""
    m = (choice or "auto").lower()
    if m not in MEMORY_FORMATS:
        raise ParameterError(f"memory_format {choice!r} is unknown; use one of {', '.join(MEMORY_FORMATS)}")
    if m != "auto":
        return m == "channels_last"
    return device.type == "cuda" or (device.type == "cpu" and (avx512 or cpu_has_avx512)())


def resolve_precision(choice: str, device: torch.device, channels_last: bool = True, *,
                      cpu_bf16: Callable[[], bool] | None = None,
                      cuda_bf16: Callable[[], bool] | None = None) -> StepPrecision:
    """The precision ``choice`` (``auto``/``f32``/``bf16``) means on ``device``; a one-line
    :class:`ParameterError` where it cannot be honoured.  ``cpu_bf16``/``cuda_bf16``: the hardware checks
    (default: :func:`geoseg.model.backends.cpu_has_bf16` and torch's CUDA bf16 check, asked at call time)."""
    cpu_bf16 = cpu_bf16 or cpu_has_bf16
    cuda_bf16 = cuda_bf16 or _cuda_bf16
    p = (choice or "auto").lower()
    if p not in PRECISIONS:
        raise ParameterError(f"precision {choice!r} is unknown; use one of {', '.join(PRECISIONS)}")
    kind = device.type
    if p == "f32" or kind not in ("cpu", "cuda"):
        if p == "bf16":
            raise ParameterError(f"precision bf16 is for cpu or cuda devices, not {kind}; use precision: f32")
        return StepPrecision("f32", kind, None, channels_last)
    if kind == "cpu":
        native = cpu_bf16()
        if p == "bf16" and not native:
            raise ParameterError(
                "precision bf16 needs a CPU with native BF16, but /proc/cpuinfo lists neither "
                f"{' nor '.join(BF16_FLAGS)} (emulated bf16 is slower than fp32); use precision: auto or f32")
        return StepPrecision("bf16", kind, torch.bfloat16, channels_last) if native \
            else StepPrecision("f32", kind, None, channels_last)
    bf16 = cuda_bf16()
    if p == "bf16" and not bf16:
        raise ParameterError("precision bf16 needs a GPU with bf16 support (compute capability 8.0+); "
                             "use precision: auto (fp16 AMP) or f32")
    return StepPrecision("amp-bf16" if bf16 else "amp-f16", kind, torch.bfloat16 if bf16 else torch.float16,
                         channels_last)


class Stepper:
    """One optimiser step at a :class:`StepPrecision`: forward under autocast, fp32 loss, backward (scaled
    for fp16 AMP), step."""

    def __init__(self, prec: StepPrecision, net: torch.nn.Module, criterion: torch.nn.Module,
                 opt: torch.optim.Optimizer) -> None:
        self.prec, self.net, self.criterion, self.opt = prec, net, criterion, opt
        self.scaler = torch.amp.GradScaler(prec.device_type) if prec.needs_scaler else None

    def loss(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The fp32 loss of a batch (forward under autocast, the loss outside it on fp32 logits)."""
        with self.prec.autocast():
            logits = self.net(x)
        return self.criterion(logits.float(), t)

    def step(self, x: torch.Tensor, t: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x, t)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return float(loss.detach())
