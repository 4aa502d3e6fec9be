"""``train``: the Python API behind ``geoseg train`` (the network it trains: :mod:`.network`).

One epoch = ``samples_per_epoch`` windows drawn with a generator seeded by
``(seed, epoch)``, so an epoch's windows, augmentations and dropout do not
depend on whether the run was resumed: resuming from epoch N's checkpoint gives
the same weights as an uninterrupted run (on the same device and threads).
"""

from __future__ import annotations

import contextlib
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
from geoseg.model.card import ClassInfo, InputSpec, ModelCard, Normalization
from geoseg.model.package import load_model, save_package
from geoseg.model.registry import output_stride
from geoseg.model.runtime import select_device
from geoseg.training import checkpoint as ck
from geoseg.training.batches import batch_windows, make_batch, prefetch
from geoseg.training.config import TrainConfig, parse_loss
from geoseg.training.data import (
    IGNORE,
    TrainScene,
    WindowSampler,
    auto_class_weights,
    band_stats,
    default_bands,
    find_pairs,
    load_scene,
    open_images,
    split_scenes,
    training_input,
    val_windows,
)
from geoseg.training.losses import CombinedLoss, confusion, scores
from geoseg.training.network import build_network, load_classes
from geoseg.training.precision import Stepper, StepPrecision, resolve_memory_format, resolve_precision

#: Config keys that may change between a run and its --resume (they do not change the optimisation).
RESUMABLE_CHANGES = {"output", "work_dir", "half", "device", "threads", "model_id", "description", "version",
                     "tile_size", "overlap", "gsd", "patience", "min_delta", "precision", "memory_format"}
LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "val_mean_accuracy", "lr",
              "seconds", "best", "train_seconds", "precision"]
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


def _fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_json().items() if k not in RESUMABLE_CHANGES}


def _gsd(scene: TrainScene) -> float | None:
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


def validate(net: torch.nn.Module, scenes: list[TrainScene], windows: list[tuple[int, int, int]], size: int,
             batch_size: int, norm: Normalization, n_classes: int, device: torch.device,
             memory_format: torch.memory_format = torch.contiguous_format) -> tuple[np.ndarray, float]:
    """(confusion matrix over the labelled pixels of ``scenes``, mean unweighted cross-entropy), in fp32."""
    net.eval()
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    loss_sum, n = 0.0, 0
    made = (make_batch(scenes, w, size, norm, None, None, memory_format) for w in batch_windows(windows, batch_size))
    with torch.inference_mode(), contextlib.closing(prefetch(made, name="geoseg-val-loader")) as batches:
        for x, t in batches:
            logits = net(x.to(device)).float().cpu()
            keep = t != IGNORE
            if keep.any():
                loss_sum += float(torch.nn.functional.cross_entropy(logits, t, ignore_index=IGNORE,
                                                                    reduction="sum"))
                n += int(keep.sum())
            cm += confusion(logits.argmax(1).numpy(), t.numpy(), n_classes)
    return cm, (loss_sum / n if n else float("nan"))


@dataclass
class _Data:
    """The scenes of a run, split into training and validation, with their labelled pixels per class."""

    scenes: list[TrainScene]
    train: list[TrainScene]
    val: list[TrainScene]
    split: dict[str, Any]
    train_counts: np.ndarray
    val_counts: np.ndarray
    unlisted: dict[int, int]
    input: InputSpec | None  # what the training DN mean (the card's ``input``)


@dataclass
class _Progress:
    """What the run has done so far (restored from the checkpoint by ``--resume``)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_miou: float | None = None
    best_epoch: int = 0
    since_best: int = 0
    start_epoch: int = 1
    seconds_before: float = 0.0
    best_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Session:
    """Everything an epoch needs."""

    cfg: TrainConfig
    work: Path
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    criterion: torch.nn.Module
    device: torch.device
    norm: Normalization
    names: list[str]
    data: _Data
    sampler: WindowSampler
    val_windows: list[tuple[int, int, int]]
    prec: StepPrecision
    stepper: Stepper


def _load_data(cfg: TrainConfig, pairs: list[Any], bands: list[str], classes: tuple[ClassInfo, ...],
               init_input: InputSpec | None, say: Callable[[str], None]) -> _Data:
    """Inspect every image, decide the training units, read every scene in them, split them and check both
    sides have labelled pixels."""
    opened = open_images(pairs, bands)
    spec = training_input(cfg, init_input, opened, say)
    say(f"reading {len(pairs)} scene(s)")
    scenes = [load_scene(p, bands, classes, cfg, o, spec) for p, o in zip(pairs, opened)]
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
    return _Data(scenes, train_sc, val_sc, split_desc, train_counts, val_counts, unlisted, spec)


def _check_windows(cfg: TrainConfig, arch: str, stride: int) -> None:
    for key in ("window", "val_window"):
        if getattr(cfg, key) % stride:
            raise ParameterError(f"{key} {getattr(cfg, key)} must be a multiple of the output stride {stride} "
                                 f"of {arch}; use {align_up(getattr(cfg, key), stride)}")


def _normalization(init: tuple[ModelCard, torch.nn.Module] | None, train_sc: list[TrainScene]
                   ) -> tuple[Normalization, str]:
    """The input normalisation and where it comes from: the package fine-tuned, else the training data."""
    if init is not None:
        return init[0].normalization, f"model package {init[0].id}"
    mean, std = band_stats(train_sc)
    return Normalization("meanstd", mean, std), "training data (valid pixels of training scenes)"


def _class_weights(cfg: TrainConfig, names: list[str], train_counts: np.ndarray) -> list[float] | None:
    n = len(names)
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "auto":
        return auto_class_weights(train_counts)
    if isinstance(cfg.class_weights, dict):
        by = {str(k).lower(): float(v) for k, v in cfg.class_weights.items()}
        unknown = set(by) - {x.lower() for x in names}
        if unknown:
            raise ParameterError(f"class_weights name(s) {', '.join(sorted(unknown))} are not classes")
        return [by.get(x.lower(), 1.0) for x in names]
    try:
        cw = [float(v) for v in cfg.class_weights]
    except (TypeError, ValueError):
        raise ParameterError("class_weights must be a list of numbers, {name: weight} or 'auto'") from None
    if len(cw) != n:
        raise ParameterError(f"class_weights has {len(cw)} values for {n} classes")
    return cw


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> Any:
    steps = math.ceil(cfg.samples_per_epoch / cfg.batch_size)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs,
                                                   pct_start=0.2)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * cfg.epochs, eta_min=cfg.lr * 0.01)
    return None


def _resume(s: _Session, n_bands: int, say: Callable[[str], None]) -> _Progress:
    """Restore weights, optimiser, scheduler, normalisation and progress from the latest checkpoint."""
    ckpt = ck.read_latest(s.work)
    assert ckpt is not None
    state = ck.load_checkpoint(ckpt, s.net, s.opt, s.sched)
    old = state.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(_fingerprint(s.cfg)) if old.get(k) != _fingerprint(s.cfg).get(k))
    if changed:
        raise ParameterError(f"cannot resume: the config changed in {', '.join(changed)} since the checkpoint; "
                             "restore them or start over with --overwrite")
    s.norm = Normalization.from_json(state["normalization"], n_bands)
    p = _Progress(history=state["history"], best_miou=state["best_miou"], best_epoch=state["best_epoch"],
                  since_best=state["since_best"], start_epoch=int(state["epoch"]) + 1,
                  seconds_before=float(state.get("seconds", 0.0)), best_metrics=state.get("best_metrics", {}))
    say(f"resuming after epoch {state['epoch']} (best val mIoU {p.best_miou:.4f} at epoch {p.best_epoch})"
        if p.best_miou is not None else f"resuming after epoch {state['epoch']}")
    return p


def _train_epoch(s: _Session, epoch: int) -> list[float]:
    """One epoch of optimisation; the losses of its batches."""
    cfg, net = s.cfg, s.net
    rng = np.random.default_rng([cfg.seed, 1000 + epoch])
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    net.train()
    if cfg.freeze_encoder:
        net.encoder.eval()  # type: ignore[union-attr]
    wins = s.sampler.draw(cfg.samples_per_epoch, rng)
    losses = []
    # windows are read and augmented in a background thread (in order: the same rng draws as a plain loop)
    made = (make_batch(s.data.train, w, cfg.window, s.norm, rng, cfg, s.prec.memory_format)
            for w in batch_windows(wins, cfg.batch_size))
    with contextlib.closing(prefetch(made)) as batches:
        for x, t in batches:
            x, t = x.to(s.device), t.to(s.device)
            if bool((t != IGNORE).any()):
                losses.append(s.stepper.step(x, t))
            if s.sched is not None:
                s.sched.step()
    return losses


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _epoch(s: _Session, p: _Progress, epoch: int, t_run: float, say: Callable[[str], None]) -> bool:
    """Train and validate one epoch, keep the best weights, checkpoint, log; True: stop early."""
    cfg, work = s.cfg, s.work
    t0 = time.perf_counter()
    losses = _train_epoch(s, epoch)
    train_seconds = time.perf_counter() - t0
    cm, val_loss = validate(s.net, s.data.val, s.val_windows, cfg.val_window, cfg.batch_size, s.norm,
                            len(s.names), s.device, s.prec.memory_format)
    sc = scores(cm, s.names)
    miou = sc["miou"]
    improved = miou is not None and (p.best_miou is None or miou > p.best_miou + cfg.min_delta)
    if improved:
        p.best_miou, p.best_epoch, p.since_best = miou, epoch, 0
        ck.save_weights(s.net, work / "best.safetensors")
        p.best_metrics = {"epoch": epoch, **sc, "val_loss": val_loss, "confusion_matrix": cm.tolist()}
        atomic_write_text(work / "best.json", json.dumps(p.best_metrics, indent=1) + "\n")
    else:
        p.since_best += 1
    rec = {
        "epoch": epoch,
        "train_loss": round(float(np.mean(losses)), 6) if losses else None,
        "val_loss": round(val_loss, 6),
        "val_miou": _round(miou),
        "val_pixel_accuracy": _round(sc["pixel_accuracy"]),
        "val_mean_accuracy": _round(sc["mean_accuracy"]),
        "lr": s.opt.param_groups[0]["lr"],
        "seconds": round(time.perf_counter() - t0, 2),
        "best": improved,
        "train_seconds": round(train_seconds, 2),
        "precision": s.prec.name,
        "val_iou": {k: v["iou"] for k, v in sc["per_class"].items()},
    }
    stop = cfg.patience > 0 and p.since_best >= cfg.patience and epoch < cfg.epochs
    if stop:
        rec["stopped_early"] = True
    p.history.append(rec)
    elapsed = p.seconds_before + time.perf_counter() - t_run
    ck.save_checkpoint(work, epoch, s.net, s.opt, s.sched, {
        "fingerprint": _fingerprint(cfg), "normalization": s.norm.to_json(), "history": p.history,
        "best_miou": p.best_miou, "best_epoch": p.best_epoch, "since_best": p.since_best,
        "best_metrics": p.best_metrics, "seconds": elapsed,
    })
    _write_logs(work, p.history)
    train_loss = rec["train_loss"] if rec["train_loss"] is not None else float("nan")
    say(f"epoch {epoch:>3}/{cfg.epochs}  loss {train_loss:.4f}"
        f"  val_loss {val_loss:.4f}  val_mIoU {miou if miou is not None else float('nan'):.4f}"
        f"  val_acc {sc['pixel_accuracy'] or 0:.4f}  lr {rec['lr']:.2e}  {rec['seconds']:.0f}s"
        + ("  *best" if improved else ""))
    if stop:
        say(f"early stopping: no val mIoU gain > {cfg.min_delta} for {cfg.patience} epoch(s)")
    return stop


def _short_names(scenes: list[TrainScene]) -> tuple[Callable[[TrainScene], str], Callable[[str], str]]:
    """How the card names a scene (its image path relative to the scenes' common folder) and a scene group."""

    def short(s: TrainScene) -> str:
        return os.path.relpath(s.image_path, os.path.commonpath([x.image_path for x in scenes]) or "/") \
            if len(scenes) > 1 else os.path.basename(s.image_path)

    def short_group(g: str) -> str:
        root = os.path.commonpath([s.group for s in scenes]) if len(scenes) > 1 else os.path.dirname(g)
        return os.path.relpath(g, os.path.dirname(root) if root == g else root)

    return short, short_group


def _training_record(cfg: TrainConfig, data: _Data, names: list[str], norm_source: str, p: _Progress,
                     stopped_early: bool, total_seconds: float, prec: StepPrecision, init_id: str | None = None
                     ) -> dict[str, Any]:
    """The card's ``training`` entry: where the model comes from and how it was trained."""
    short, short_group = _short_names(data.scenes)
    return {
        "geoseg_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_scenes": sorted({short(s) for s in data.train}),
        "validation_scenes": sorted({short(s) for s in data.val}),
        **{k: ([short_group(g) for g in v] if k == "validation_groups" else v)
           for k, v in data.split.items()},
        "train_pixels_per_class": {x: int(c) for x, c in zip(names, data.train_counts)},
        "validation_pixels_per_class": {x: int(c) for x, c in zip(names, data.val_counts)},
        "ignored_unlisted_label_values": {str(k): v for k, v in sorted(data.unlisted.items())},
        "normalization_from": norm_source,
        "init_from": cfg.init_from,
        "init_from_model": init_id,  # the id of the package fine-tuned (None: random weights)
        "best_epoch": p.best_epoch,
        "epochs_run": len(p.history),
        "stopped_early": stopped_early,
        "train_seconds": round(total_seconds, 1),
        **prec.record(),  # the precision and memory format of this run's steps (cfg.precision asked for it)
        "config": cfg.to_json(),
    }


def _tiling(cfg: TrainConfig, stride: int) -> tuple[int, int]:
    """The packaged model's prediction tile size and overlap (multiples of the output stride)."""
    tile = cfg.tile_size or 512
    overlap = cfg.overlap if cfg.overlap is not None else 64
    if tile % stride or overlap % stride:
        raise ParameterError(f"tile_size {tile} and overlap {overlap} must be multiples of the output stride {stride}")
    return tile, overlap


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train a model as ``cfg`` says; write checkpoints/logs to ``cfg.work_path`` and the package to ``cfg.output``.

    The steps: validate and prepare the work folder -> read and split the data -> build the network, loss,
    optimiser and schedule (or restore them with ``resume``) -> run the epochs -> package the best epoch.
    """
    say = log or (lambda s: None)
    cfg.validate()
    output, work = Path(cfg.output), cfg.work_path
    _prepare_work(work, output, resume, overwrite)
    work.mkdir(parents=True, exist_ok=True)
    device = select_device(cfg.device)
    # errors before any data is read
    prec = resolve_precision(cfg.precision, device, resolve_memory_format(cfg.memory_format, device))
    torch.set_num_threads(max(1, cfg.threads or len(os.sched_getaffinity(0))))

    init = load_model(cfg.init_from) if cfg.init_from else None
    classes = load_classes(cfg, init[0] if init else None)
    names = [c.name for c in classes]
    pairs = find_pairs(cfg)
    bands = list(cfg.bands) or (list(init[0].bands) if init else default_bands(pairs[0].image))
    data = _load_data(cfg, pairs, bands, classes, init[0].input if init else None, say)
    if data.input is None:
        say("warning: the training images declare no units (no 'input' in the config, no product metadata); "
            "the model card will not say what its input values mean, so predict cannot check scenes")

    net, arch, encoder, params = build_network(cfg, classes, bands, init, say)
    stride = output_stride(arch, params)
    _check_windows(cfg, arch, stride)
    norm, norm_source = _normalization(init, data.train)
    cw = _class_weights(cfg, names, data.train_counts)
    criterion = CombinedLoss(parse_loss(cfg.loss), len(classes), cw, cfg.focal_gamma).to(device)
    net.to(device).to(memory_format=prec.memory_format)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _scheduler(cfg, opt)
    say(f"steps in {prec.name} ({prec.record()['memory_format']}), fp32 weights and loss")
    session = _Session(cfg, work, net, opt, sched, criterion, device, norm, names, data,
                       WindowSampler(data.train, len(classes), cfg.window, cfg.sampling, cfg.balanced_fraction,
                                     cfg.seed),
                       val_windows(data.val, cfg.val_window), prec, Stepper(prec, net, criterion, opt))
    progress = _resume(session, len(bands), say) if resume else _Progress()

    history = progress.history
    stopped_early = bool(history and history[-1].get("stopped_early"))
    t_run = time.perf_counter()
    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        if stopped_early:
            break
        if _epoch(session, progress, epoch, t_run, say):
            stopped_early = True
            break

    if not (work / "best.safetensors").exists():
        raise InputError("no epoch produced a validation mIoU; nothing to package")
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(work / "best.safetensors")))
    net.to("cpu").to(memory_format=torch.contiguous_format).eval()
    total_seconds = progress.seconds_before + time.perf_counter() - t_run
    tile, overlap = _tiling(cfg, stride)
    card = ModelCard(
        id=cfg.model_id or f"{arch.lower()}-{encoder or 'pixel'}-trained",
        architecture=arch, encoder=encoder, bands=tuple(bands), classes=classes, normalization=session.norm,
        tile_size=tile, overlap=overlap, output_stride=stride,
        gsd_m=cfg.gsd if cfg.gsd is not None else _gsd(data.scenes[0]),
        input_nodata=cfg.input_nodata, input=data.input, version=cfg.version, trained=True,
        description=cfg.description or f"Trained with geoseg train on {len(data.train)} scene(s).",
        arch_params=params,
        extra={
            "metrics": {
                "validation": progress.best_metrics,
                "definitions": "confusion over labelled validation pixels (ignore/nodata excluded); miou and "
                               "mean_accuracy average the classes present in the validation labels",
            },
            "training": _training_record(cfg, data, names, norm_source, progress, stopped_early, total_seconds,
                                         prec, init[0].id if init else None),
        },
    )
    save_package(card, net, output, overwrite=overwrite, half=cfg.half)
    best_miou = progress.best_miou
    say(f"wrote {output} (best epoch {progress.best_epoch}, val mIoU {best_miou:.4f})" if best_miou is not None
        else f"wrote {output}")
    return TrainResult(str(output), str(work), progress.best_epoch, best_miou, len(history), stopped_early,
                       progress.best_metrics, history)
