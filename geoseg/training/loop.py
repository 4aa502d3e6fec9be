"""``train``: the Python API behind ``geoseg train``.

One epoch = ``samples_per_epoch`` windows drawn with a generator seeded by
``(seed, epoch)``, so an epoch's windows, augmentations and dropout do not
depend on whether the run was resumed: resuming from epoch N's checkpoint gives
the same weights as an uninterrupted run (on the same device and threads).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg._util.atomic import atomic_path, atomic_write_text
from geoseg._version import __version__
from geoseg.errors import InputError, OutputExistsError, ParameterError
from geoseg.io.grid import align_up
from geoseg.model.card import ClassInfo, ModelCard, Normalization, parse_classes, read_class_file
from geoseg.model.package import load_model, save_package
from geoseg.model.registry import build_model, canonical_arch, output_stride
from geoseg.model.runtime import select_device
from geoseg.training import checkpoint as ck
from geoseg.training.config import TrainConfig, parse_loss
from geoseg.training.data import (
    IGNORE,
    Scene,
    WindowSampler,
    augment,
    auto_class_weights,
    band_stats,
    crop,
    default_bands,
    find_pairs,
    load_scene,
    normalise,
    split_scenes,
    val_windows,
)
from geoseg.training.losses import CombinedLoss, confusion, scores

#: Config keys that may change between a run and its --resume (they do not change the optimisation).
RESUMABLE_CHANGES = {"output", "work_dir", "half", "device", "threads", "model_id", "description", "version",
                     "tile_size", "overlap", "gsd", "patience", "min_delta"}
LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "lr",
              "seconds", "best"]
WORK_FILES = ("latest.json", "best.safetensors", "best.json", "log.csv", "log.json")


@dataclass
class TrainResult:
    output: str
    work_dir: str
    best_epoch: int
    best_miou: float | None
    epochs_run: int
    stopped_early: bool
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _load_classes(cfg: TrainConfig, init_card: ModelCard | None) -> tuple[ClassInfo, ...]:
    if cfg.classes is None:
        assert init_card is not None
        return init_card.classes
    raw = read_class_file(cfg.classes) if isinstance(cfg.classes, str) else cfg.classes
    classes = parse_classes(raw)
    if any(c.value == cfg.ignore_index for c in classes):
        raise ParameterError(f"class value {cfg.ignore_index} is also the ignore_index; change one of them")
    return classes


def _head_keys(state: dict[str, torch.Tensor]) -> list[str]:
    keys = [k for k in state if k.startswith("segmentation_head.")]
    if keys:
        return keys
    return list(state)[-2:]  # Pixel* archs: weight and bias of the last 1x1 convolution


def build_network(cfg: TrainConfig, classes: tuple[ClassInfo, ...], bands: list[str],
                  init: tuple[ModelCard, torch.nn.Module] | None, log: Callable[[str], None]
                  ) -> tuple[torch.nn.Module, str, str | None, dict[str, Any]]:
    """(network, arch, encoder, arch_params); fine-tuning copies every tensor that fits, a new head otherwise."""
    if init is not None:
        card0, net0 = init
        arch = canonical_arch(cfg.arch) if cfg.arch else card0.architecture
        encoder = cfg.encoder or card0.encoder
        params = dict(cfg.arch_params) if cfg.arch_params else dict(card0.arch_params)
        if (arch, encoder, params) != (card0.architecture, card0.encoder, dict(card0.arch_params)):
            raise ParameterError(
                f"init_from {card0.id} is {card0.architecture}/{card0.encoder} {card0.arch_params}; fine-tuning "
                f"keeps the architecture: drop arch/encoder/arch_params from the config"
            )
        if [b.lower() for b in bands] != [b.lower() for b in card0.bands]:
            raise ParameterError(f"init_from {card0.id} takes bands {','.join(card0.bands)} but the config uses "
                                 f"{','.join(bands)}; fine-tuning needs the same input bands")
    else:
        arch = canonical_arch(cfg.arch or "Unet")
        encoder = None if arch.startswith("Pixel") else (cfg.encoder or "resnet18")
        params = dict(cfg.arch_params)
    torch.manual_seed(cfg.seed)
    net = build_model(arch, encoder, len(bands), len(classes), **params)
    if init is not None:
        card0, net0 = init
        src, dst = net0.state_dict(), net.state_dict()
        head = set(_head_keys(dst))
        same_classes = [(c.value, c.name) for c in classes] == [(c.value, c.name) for c in card0.classes]
        copied, rows = 0, 0
        for k, v in src.items():
            if k not in dst:
                continue
            if k in head and not same_classes:
                # new class list: copy the head rows of classes that keep their name, others stay random
                old = {c.name.lower(): i for i, c in enumerate(card0.classes)}
                for i, c in enumerate(classes):
                    j = old.get(c.name.lower())
                    if j is not None and v.shape[1:] == dst[k].shape[1:]:
                        dst[k][i] = v[j]
                        rows += 1
                continue
            if dst[k].shape == v.shape:
                dst[k] = v.clone()
                copied += 1
        net.load_state_dict(dst)
        what = "same classes" if same_classes else f"new head, {rows // max(1, len(head))} class(es) kept by name"
        log(f"fine-tuning from {card0.id}: {copied} tensors copied ({what})")
    if cfg.freeze_encoder:
        enc = getattr(net, "encoder", None)
        if enc is None:
            raise ParameterError(f"{arch} has no encoder to freeze; drop freeze_encoder")
        for p in enc.parameters():
            p.requires_grad_(False)
    return net, arch, encoder, params


def _fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_json().items() if k not in RESUMABLE_CHANGES}


def _gsd(scene: Scene) -> float | None:
    if scene.crs is None or scene.transform is None:
        return None
    a, e = abs(scene.transform.a), abs(scene.transform.e)
    if scene.crs.is_projected:
        return round(float(a) * float(scene.crs.linear_units_factor[1]), 2)
    # geographic: approximate metres of the N-S pixel size
    return round(float(e) * 111_320.0, 1)


def _prepare_work(work: Path, output: Path, resume: bool, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; choose another output or pass --overwrite")
    latest = ck.read_latest(work) if work.exists() else None
    if resume:
        if latest is None:
            raise InputError(f"nothing to resume: {work} has no checkpoint; run without --resume")
        return
    if latest is not None and not overwrite:
        raise OutputExistsError(f"{work} holds checkpoints of an earlier run; pass --resume to continue it "
                                "or --overwrite to start over")
    if work.exists():
        for p in work.iterdir():
            if p.name in WORK_FILES or p.name.startswith("ckpt-epoch") or p.name.startswith(".ckpt-epoch"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def _write_logs(work: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(work / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        for rec in history:
            w.writerow({k: rec.get(k) for k in LOG_FIELDS})
    atomic_write_text(work / "log.json", json.dumps(history, indent=1) + "\n")


def _batch(scenes: list[Scene], windows: list[tuple[int, int, int]], size: int, norm: Normalization,
           rng: np.random.Generator | None, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ts = [], []
    for si, r0, c0 in windows:
        x, valid, t = crop(scenes[si], r0, c0, size)
        if rng is not None:
            x, valid, t = augment(x, valid, t, rng, cfg.d4, cfg.brightness, cfg.contrast)
        xs.append(normalise(x, valid, norm))
        ts.append(t.astype(np.int64))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts))


def validate(net: torch.nn.Module, scenes: list[Scene], windows: list[tuple[int, int, int]], size: int,
             batch_size: int, norm: Normalization, n_classes: int, device: torch.device) -> tuple[np.ndarray, float]:
    """(confusion matrix over the labelled pixels of ``scenes``, mean unweighted cross-entropy)."""
    net.eval()
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    loss_sum, n = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            x, t = _batch(scenes, windows[start:start + batch_size], size, norm, None, None)  # type: ignore[arg-type]
            logits = net(x.to(device)).float().cpu()
            keep = t != IGNORE
            if keep.any():
                loss_sum += float(torch.nn.functional.cross_entropy(logits, t, ignore_index=IGNORE,
                                                                    reduction="sum"))
                n += int(keep.sum())
            cm += confusion(logits.argmax(1).numpy(), t.numpy(), n_classes)
    return cm, (loss_sum / n if n else float("nan"))


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train a model as ``cfg`` says; write checkpoints/logs to ``cfg.work_path`` and the package to ``cfg.output``."""
    say = log or (lambda s: None)
    cfg.validate()
    output, work = Path(cfg.output), cfg.work_path
    _prepare_work(work, output, resume, overwrite)
    work.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
    torch.set_num_threads(max(1, cfg.threads or len(os.sched_getaffinity(0))))

    init = load_model(cfg.init_from) if cfg.init_from else None
    classes = _load_classes(cfg, init[0] if init else None)
    names = [c.name for c in classes]
    pairs = find_pairs(cfg)
    bands = list(cfg.bands) or (list(init[0].bands) if init else default_bands(pairs[0].image))
    say(f"reading {len(pairs)} scene(s)")
    scenes = [load_scene(p, bands, classes, cfg) for p in pairs]
    unlisted: dict[int, int] = {}
    for s in scenes:
        for v, c in s.unlisted.items():
            unlisted[v] = unlisted.get(v, 0) + c
    if unlisted:
        say("warning: label values not in the class list were ignored: "
            + ", ".join(f"{v} ({c} px)" for v, c in sorted(unlisted.items())))
    train_sc, val_sc, split_desc = split_scenes(scenes, cfg)
    if not val_sc:
        raise ParameterError("the validation split is empty; set val_scenes or a val_fraction > 0")
    n = len(classes)
    train_counts = sum((s.class_counts(n) for s in train_sc), np.zeros(n, dtype=np.int64))
    val_counts = sum((s.class_counts(n) for s in val_sc), np.zeros(n, dtype=np.int64))
    if train_counts.sum() == 0 or val_counts.sum() == 0:
        raise InputError("the training or the validation side has no labelled pixel; check labels and split")
    say(f"training: {len(train_sc)} scene(s), {int(train_counts.sum()):,} labelled px; validation: "
        f"{len(val_sc)} scene(s), {int(val_counts.sum()):,} labelled px")

    net, arch, encoder, params = build_network(cfg, classes, bands, init, say)
    stride = output_stride(arch, params)
    for key in ("window", "val_window"):
        if getattr(cfg, key) % stride:
            raise ParameterError(f"{key} {getattr(cfg, key)} must be a multiple of the output stride {stride} "
                                 f"of {arch}; use {align_up(getattr(cfg, key), stride)}")
    if init is not None:
        norm, norm_source = init[0].normalization, f"model package {init[0].id}"
    else:
        mean, std = band_stats(train_sc)
        norm, norm_source = Normalization("meanstd", mean, std), "training data (valid pixels of training scenes)"

    if cfg.class_weights is None:
        cw = None
    elif cfg.class_weights == "auto":
        cw = auto_class_weights(train_counts)
    elif isinstance(cfg.class_weights, dict):
        by = {str(k).lower(): float(v) for k, v in cfg.class_weights.items()}
        unknown = set(by) - {x.lower() for x in names}
        if unknown:
            raise ParameterError(f"class_weights name(s) {', '.join(sorted(unknown))} are not classes")
        cw = [by.get(x.lower(), 1.0) for x in names]
    else:
        try:
            cw = [float(v) for v in cfg.class_weights]
        except (TypeError, ValueError):
            raise ParameterError("class_weights must be a list of numbers, {name: weight} or 'auto'") from None
        if len(cw) != n:
            raise ParameterError(f"class_weights has {len(cw)} values for {n} classes")
    terms = parse_loss(cfg.loss)
    criterion = CombinedLoss(terms, n, cw, cfg.focal_gamma).to(device)
    net.to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(cfg.samples_per_epoch / cfg.batch_size)
    if cfg.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs,
                                                         pct_start=0.2)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * cfg.epochs, eta_min=cfg.lr * 0.01)
    else:
        sched = None

    sampler = WindowSampler(train_sc, n, cfg.window, cfg.sampling, cfg.balanced_fraction, cfg.seed)
    vwin = val_windows(val_sc, cfg.val_window)

    history: list[dict[str, Any]] = []
    best_miou: float | None = None
    best_epoch, since_best, start_epoch, seconds_before = 0, 0, 1, 0.0
    best_metrics: dict[str, Any] = {}
    if resume:
        ckpt = ck.read_latest(work)
        assert ckpt is not None
        state = ck.load_checkpoint(ckpt, net, opt, sched)
        old = state.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(_fingerprint(cfg)) if old.get(k) != _fingerprint(cfg).get(k))
        if changed:
            raise ParameterError(f"cannot resume: the config changed in {', '.join(changed)} since the checkpoint; "
                                 "restore them or start over with --overwrite")
        norm = Normalization.from_json(state["normalization"], len(bands))
        history = state["history"]
        best_miou, best_epoch, since_best = state["best_miou"], state["best_epoch"], state["since_best"]
        best_metrics = state.get("best_metrics", {})
        start_epoch = int(state["epoch"]) + 1
        seconds_before = float(state.get("seconds", 0.0))
        say(f"resuming after epoch {state['epoch']} (best val mIoU {best_miou:.4f} at epoch {best_epoch})"
            if best_miou is not None else f"resuming after epoch {state['epoch']}")

    stopped_early = bool(history and history[-1].get("stopped_early"))
    t_run = time.perf_counter()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, 1000 + epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        net.train()
        if cfg.freeze_encoder:
            net.encoder.eval()  # type: ignore[union-attr]
        wins = sampler.draw(cfg.samples_per_epoch, rng)
        losses = []
        for start in range(0, len(wins), cfg.batch_size):
            x, t = _batch(train_sc, wins[start:start + cfg.batch_size], cfg.window, norm, rng, cfg)
            x, t = x.to(device), t.to(device)
            opt.zero_grad(set_to_none=True)
            if bool((t != IGNORE).any()):
                loss = criterion(net(x), t)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            if sched is not None:
                sched.step()
        cm, val_loss = validate(net, val_sc, vwin, cfg.val_window, cfg.batch_size, norm, n, device)
        sc = scores(cm, names)
        miou = sc["miou"]
        improved = miou is not None and (best_miou is None or miou > best_miou + cfg.min_delta)
        if improved:
            best_miou, best_epoch, since_best = miou, epoch, 0
            ck.save_weights(net, work / "best.safetensors")
            best_metrics = {"epoch": epoch, **sc, "val_loss": val_loss, "confusion_matrix": cm.tolist()}
            atomic_write_text(work / "best.json", json.dumps(best_metrics, indent=1) + "\n")
        else:
            since_best += 1
        rec = {
            "epoch": epoch,
            "train_loss": round(float(np.mean(losses)), 6) if losses else None,
            "val_loss": round(val_loss, 6),
            "val_miou": None if miou is None else round(miou, 6),
            "val_pixel_accuracy": None if sc["pixel_accuracy"] is None else round(sc["pixel_accuracy"], 6),
            "val_mean_accuracy": None if sc["mean_accuracy"] is None else round(sc["mean_accuracy"], 6),
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t0, 2),
            "best": improved,
            "val_iou": {k: v["iou"] for k, v in sc["per_class"].items()},
        }
        stop = cfg.patience > 0 and since_best >= cfg.patience and epoch < cfg.epochs
        if stop:
            rec["stopped_early"] = True
        history.append(rec)
        elapsed = seconds_before + time.perf_counter() - t_run
        ck.save_checkpoint(work, epoch, net, opt, sched, {
            "fingerprint": _fingerprint(cfg), "normalization": norm.to_json(), "history": history,
            "best_miou": best_miou, "best_epoch": best_epoch, "since_best": since_best,
            "best_metrics": best_metrics, "seconds": elapsed,
        })
        _write_logs(work, history)
        say(f"epoch {epoch:>3}/{cfg.epochs}  loss {rec['train_loss'] if rec['train_loss'] is not None else float('nan'):.4f}"
            f"  val_loss {val_loss:.4f}  val_mIoU {miou if miou is not None else float('nan'):.4f}"
            f"  val_acc {sc['pixel_accuracy'] or 0:.4f}  lr {rec['lr']:.2e}  {rec['seconds']:.0f}s"
            + ("  *best" if improved else ""))
        if stop:
            say(f"early stopping: no val mIoU gain > {cfg.min_delta} for {cfg.patience} epoch(s)")
            stopped_early = True
            break

    if not (work / "best.safetensors").exists():
        raise InputError("no epoch produced a validation mIoU; nothing to package")
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(work / "best.safetensors")))
    net.to("cpu").eval()
    total_seconds = seconds_before + time.perf_counter() - t_run
    tile = cfg.tile_size or 512
    overlap = cfg.overlap if cfg.overlap is not None else 64
    if tile % stride or overlap % stride:
        raise ParameterError(f"tile_size {tile} and overlap {overlap} must be multiples of the output stride {stride}")

    def short(s: Scene) -> str:
        return os.path.relpath(s.image_path, os.path.commonpath([x.image_path for x in scenes]) or "/") \
            if len(scenes) > 1 else os.path.basename(s.image_path)

    def short_group(g: str) -> str:
        root = os.path.commonpath([s.group for s in scenes]) if len(scenes) > 1 else os.path.dirname(g)
        return os.path.relpath(g, os.path.dirname(root) if root == g else root)

    epochs_run = len(history)
    card = ModelCard(
        id=cfg.model_id or f"{arch.lower()}-{encoder or 'pixel'}-trained",
        architecture=arch,
        encoder=encoder,
        bands=tuple(bands),
        classes=classes,
        normalization=norm,
        tile_size=tile,
        overlap=overlap,
        output_stride=stride,
        gsd_m=cfg.gsd if cfg.gsd is not None else _gsd(scenes[0]),
        input_nodata=cfg.input_nodata,
        version=cfg.version,
        trained=True,
        description=cfg.description or f"Trained with geoseg train on {len(train_sc)} scene(s).",
        arch_params=params,
        extra={
            "metrics": {
                "validation": best_metrics,
                "definitions": "confusion over labelled validation pixels (ignore/nodata excluded); miou and "
                               "mean_accuracy average the classes present in the validation labels",
            },
            "training": {
                "geoseg_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "train_scenes": sorted({short(s) for s in train_sc}),
                "validation_scenes": sorted({short(s) for s in val_sc}),
                **{k: ([short_group(g) for g in v] if k == "validation_groups" else v)
                   for k, v in split_desc.items()},
                "train_pixels_per_class": {x: int(c) for x, c in zip(names, train_counts)},
                "validation_pixels_per_class": {x: int(c) for x, c in zip(names, val_counts)},
                "ignored_unlisted_label_values": {str(k): v for k, v in sorted(unlisted.items())},
                "normalization_from": norm_source,
                "init_from": cfg.init_from,
                "best_epoch": best_epoch,
                "epochs_run": epochs_run,
                "stopped_early": stopped_early,
                "train_seconds": round(total_seconds, 1),
                "config": cfg.to_json(),
            },
        },
    )
    save_package(card, net, output, overwrite=overwrite, half=cfg.half)
    say(f"wrote {output} (best epoch {best_epoch}, val mIoU {best_miou:.4f})" if best_miou is not None
        else f"wrote {output}")
    return TrainResult(str(output), str(work), best_epoch, best_miou, epochs_run, stopped_early, best_metrics,
                       history)
