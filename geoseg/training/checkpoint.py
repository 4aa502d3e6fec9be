"""Checkpoints without pickle: safetensors for weights and optimiser tensors, JSON for everything else.

Layout of ``WORK/``::

    ckpt-epochNNNN/{model.safetensors, optimizer.safetensors, state.json}
    latest.json        {"checkpoint": "ckpt-epochNNNN"}   (written last, atomically)
    best.safetensors   weights of the best epoch by validation mIoU
    best.json          that epoch's metrics

A checkpoint folder is complete before ``latest.json`` points to it, so an
interrupted run resumes from the last complete epoch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from geoseg._util.atomic import atomic_dir, atomic_write, atomic_write_text
from geoseg.errors import InputError

LATEST = "latest.json"


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "ids": sorted(sd["state"])}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, _, k = key.partition(".")
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_weights(net: torch.nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: save_file(_cpu_state(net), tmp))


def _cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def save_checkpoint(work: Path, epoch: int, net: torch.nn.Module, opt: torch.optim.Optimizer,
                    sched: Any, state: dict[str, Any]) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-epoch{epoch:04d}"
    final = work / name
    with atomic_dir(final) as tmp:
        save_file(_cpu_state(net), str(tmp / "model.safetensors"))
        tensors, meta = _optimizer_split(opt)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        full = {**state, "epoch": epoch, "optimizer": meta,
                "scheduler": sched.state_dict() if sched is not None else None}
        (tmp / "state.json").write_text(json.dumps(full, indent=1, default=_json_default))
    previous = read_latest(work)
    atomic_write_text(work / LATEST, json.dumps({"checkpoint": name, "epoch": epoch}) + "\n")
    if previous is not None and previous != final:
        shutil.rmtree(previous, ignore_errors=True)
    return final


def _json_default(o: Any) -> Any:
    if isinstance(o, tuple):
        return list(o)
    if torch.is_tensor(o):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint")


def read_latest(work: Path) -> Path | None:
    p = work / LATEST
    if not p.exists():
        return None
    try:
        name = json.loads(p.read_text())["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{p} is corrupt; delete {work} to start over") from None
    return work / name


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give restored optimiser state the memory layout of its parameter (checkpoints store contiguous tensors;
    a channels_last run's state is channels_last).  Elementwise updates give the same numbers either way."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def load_checkpoint(ckpt: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    """Restore weights, optimiser and scheduler from ``ckpt``; return its state.json."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        net.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
        meta = state.pop("optimizer")
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        opt.load_state_dict(_optimizer_join(tensors, meta))
        _match_layouts(opt)
        sched_state = state.pop("scheduler")
        if sched is not None and sched_state is not None:
            sched.load_state_dict(sched_state)
    except (OSError, json.JSONDecodeError, KeyError, RuntimeError, ValueError) as e:
        raise InputError(f"checkpoint {ckpt} cannot be resumed ({str(e).splitlines()[0]}); "
                         "it may come from another config: start over without --resume") from None
    return state
