"""The network to train: a new one of the configured architecture, or one fine-tuned from a model package
(every tensor that fits is copied; a new class list gets a new head that keeps the rows of classes by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from geoseg.errors import ParameterError
from geoseg.model.card import ClassInfo, ModelCard, parse_classes, read_class_file
from geoseg.model.registry import build_model, canonical_arch
from geoseg.training.config import TrainConfig


def load_classes(cfg: TrainConfig, init_card: ModelCard | None) -> tuple[ClassInfo, ...]:
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
