"""Blend overlapping tile probabilities into output blocks (numpy only).

A tile's softmax probabilities are multiplied by a 2-D weight window and cut into
*pieces*, one per output block the tile touches.  A block sums the pieces of all
tiles that touch it - always in global tile order, so a pixel's sum is the same
whatever the block layout or the order in which tasks finished - and divides by
the summed weights.  Probabilities are averaged, never labels.

Pieces carry probabilities as 16-bit fixed point (``round(p * 65535)``, a
resolution of 1.5e-5, far finer than the uint8 percent outputs) and the weight
as float32: 2C + 4 bytes per pixel instead of 8C + 4, which halves the memory
held for tiles that overhang into blocks not yet written.

Weight windows taper only the tile sides that lie inside the scene (scene-border
sides keep full weight) over the length of the overlap, and are multiplied by
the tile's valid-pixel mask, so input nodata never contributes.  A pixel to
which no valid input contributed is nodata in every product.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import ParameterError
from geoseg.io.grid import Tile, Window

BLEND_MODES = ("cosine", "linear", "gaussian", "none")
NODATA = 255
#: confidence.tif's value for a pixel the cloud mask left out (its input was valid): not nodata, not a percent
CLOUD = 254
PROB_SCALE = 65535.0


def _ramp(n: int, mode: str) -> np.ndarray:
    """Weights of the ``n`` pixels of a taper, from the tile edge inwards; all in (0, 1]."""
    u = (np.arange(n, dtype=np.float64) + 0.5) / n
    if mode == "linear":
        return u
    if mode == "cosine":  # raised cosine (Hann): two overlapping ramps sum to exactly 1
        return np.sin(0.5 * np.pi * u) ** 2
    if mode == "gaussian":
        return np.exp(-0.5 * ((1.0 - u) / 0.4) ** 2)
    return np.ones(n)


def window_1d(length: int, overlap: int, mode: str, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blend weights for a tile side of ``length`` pixels."""
    if mode not in BLEND_MODES:
        raise ParameterError(f"unknown blend mode {mode!r}; choose one of {', '.join(BLEND_MODES)}")
    w = np.ones(length, dtype=np.float64)
    n = min(overlap, length)
    if mode == "none" or n == 0:
        return w
    r = _ramp(n, mode)
    if taper_start:
        w[:n] = np.minimum(w[:n], r)
    if taper_end:
        w[length - n :] = np.minimum(w[length - n :], r[::-1])
    return w


def tile_weights(tile: Tile, overlap: int, mode: str) -> np.ndarray:
    """2-D float32 weights of one tile (before the valid mask is applied)."""
    wy = window_1d(tile.window.height, overlap, mode, not tile.top, not tile.bottom)
    wx = window_1d(tile.window.width, overlap, mode, not tile.left, not tile.right)
    return np.outer(wy, wx).astype(np.float32)


@dataclass(frozen=True)
class Piece:
    """The weighted contribution of one tile to one output block."""

    tile_index: int
    window: Window  # scene coordinates
    probs: np.ndarray  # (C, h, w) uint16: probability * PROB_SCALE, rounded
    weight: np.ndarray  # (h, w) float32


def cut_pieces(
    tile: Tile, probs: np.ndarray, weight: np.ndarray, blocks: Iterable[tuple[int, Window]]
) -> list[tuple[int, Piece]]:
    """Cut a tile's probabilities and weights into one (copied) piece per block it touches."""
    out = []
    for block_index, bwin in blocks:
        inter = tile.window.intersection(bwin)
        if inter is None:
            continue
        rs, cs = inter.slices_in(tile.window)
        w = np.ascontiguousarray(weight[rs, cs])
        if not w.any():
            continue  # nothing valid here: the piece would add zeros
        q = np.rint(probs[:, rs, cs] * PROB_SCALE).astype(np.uint16)
        out.append((block_index, Piece(tile.index, inter, q, w)))
    return out


def blend_pieces(block: Window, pieces: Sequence[Piece], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of the pieces over ``block``: (probabilities (C, h, w) float32, valid mask (h, w))."""
    acc = np.zeros((n_classes, block.height, block.width), dtype=np.float32)
    wsum = np.zeros((block.height, block.width), dtype=np.float32)
    for p in sorted(pieces, key=lambda p: p.tile_index):
        rs, cs = p.window.slices_in(block)
        acc[:, rs, cs] += p.weight * p.probs
        wsum[rs, cs] += p.weight
    valid = wsum > 0
    np.divide(acc, wsum * np.float32(PROB_SCALE), out=acc, where=valid[None])
    acc[:, ~valid] = 0.0
    return acc, valid


def classify(probs: np.ndarray, valid: np.ndarray, class_values: Sequence[int]) -> np.ndarray:
    """uint8 class codes: the value of the most probable class, NODATA where invalid."""
    lut = np.asarray(class_values, dtype=np.uint8)
    out = lut[np.argmax(probs, axis=0)]
    out[~valid] = NODATA
    return out


def to_percent(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 percent (0..100) per band, NODATA where invalid."""
    out = np.rint(probs * 100.0).astype(np.uint8)
    out[..., ~valid] = NODATA
    return out
