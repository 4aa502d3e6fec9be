"""The two task bodies of a prediction graph; plain functions over paths and value types.

``predict_tiles`` reads a batch of tiles, runs the model and cuts the weighted
probabilities into per-block pieces.  ``blend_and_write`` merges the pieces of
one output block and writes its products.  Both receive a :class:`RunSpec`
(paths and numbers only, picklable) - never open datasets or models - so they
run unchanged on threads, processes or dask.distributed workers.  No dask here.

The runtime (torch, ONNX Runtime, OpenVINO) and precision were resolved, and the
exported graph cached, by the parent before the graph ran: tasks only load the
predictor (once per process, :func:`geoseg.model.runtime.get_predictor`).  With
``spec.profile`` each task returns its stage timers (:mod:`geoseg.predict.profile`)
with its result; a batch's timers travel to the parent through the first block it
touches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio

from geoseg.io.grid import Block, Tile, Window
from geoseg.io.output import write_block
from geoseg.io.radiometry import apply_transform
from geoseg.io.raster import configure_gdal_cache, read_window
from geoseg.model.runtime import configure_threads, get_predictor, predict_tta
from geoseg.predict.blend import Piece, blend_pieces, classify, cut_pieces, tile_weights, to_percent
from geoseg.predict.profile import Timer


@dataclass(frozen=True)
class RunSpec:
    scene_path: str
    bands: tuple[int, ...]
    use_masks: bool
    input_nodata: float | None
    model_path: str
    device: str
    amp: bool | None
    torch_threads: int
    batch_size: int
    overlap: int
    blend: str
    height: int
    width: int
    block_size: int
    class_values: tuple[int, ...]
    landcover_part: str
    probabilities_part: str | None = None
    confidence_part: str | None = None
    tta: str = "none"
    # card_dn = dn * input_scale + input_offset per band (geoseg.io.radiometry); None: the DN as read
    input_scale: tuple[float, ...] | None = None
    input_offset: tuple[float, ...] | None = None
    # the concrete runtime and precision (geoseg.model.runtime.choose_runtime), decided in the parent
    runtime: str = "torch"
    precision: str = "f32"
    profile: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    def blocks_touching(self, w: Window) -> list[tuple[int, Window]]:
        """The output blocks (index, window) that intersect ``w`` (block grid of ``block_size``)."""
        bs = self.block_size
        n_cols = -(-self.width // bs)
        r0, r1 = max(0, w.row_off) // bs, (min(self.height, w.row_end) - 1) // bs
        c0, c1 = max(0, w.col_off) // bs, (min(self.width, w.col_end) - 1) // bs
        out = []
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                win = Window(r * bs, c * bs, min(bs, self.height - r * bs), min(bs, self.width - c * bs))
                out.append((r * n_cols + c, win))
        return out


@dataclass(frozen=True)
class TileBatch:
    """A batch task's result: pieces by block index, and its stage timers for block ``owner``."""

    pieces: dict[int, list[Piece]]
    owner: int  # the lowest block index the batch's tiles touch (their timers go with that block)
    seconds: dict[str, float] | None = None


@dataclass(frozen=True)
class BlockPart:
    """What a block task receives from one batch: its pieces, and the batch's timers if it is the owner."""

    pieces: list[Piece]
    seconds: dict[str, float] | None = None


@dataclass(frozen=True)
class BlockResult:
    """A block task's result: the class-code histogram (256 bins) and the timers of the block and its batches."""

    hist: np.ndarray
    seconds: dict[str, float] | None = field(default=None)


def predict_tiles(spec: RunSpec, tiles: Sequence[Tile]) -> TileBatch:
    """Run the model on ``tiles``; return their weighted pieces keyed by output block index.

    Tiles without a valid pixel are skipped.  The forward pass always sees a
    batch of exactly ``spec.batch_size`` tiles (zero-padded), so a tile's
    probabilities never depend on which other tiles share its batch.
    """
    timer = Timer(spec.profile)
    configure_threads(spec.torch_threads)
    configure_gdal_cache()
    with timer.stage("load"):
        predictor = get_predictor(spec.model_path, spec.device, spec.amp, spec.runtime, spec.precision)
    norm = predictor.card.normalization
    with timer.stage("read"), rasterio.open(spec.scene_path) as src:
        reads = [read_window(src, t.window, spec.bands, spec.use_masks, spec.input_nodata) for t in tiles]
    active = [i for i, (_, valid) in enumerate(reads) if valid.any()]
    probs: dict[int, np.ndarray] = {}
    for start in range(0, len(active), spec.batch_size):
        chunk = active[start : start + spec.batch_size]
        with timer.stage("normalise"):
            h, w = tiles[chunk[0]].window.height, tiles[chunk[0]].window.width
            x = np.zeros((spec.batch_size, len(spec.bands), h, w), dtype=np.float32)
            for k, i in enumerate(chunk):
                data, valid = reads[i]
                xn = norm.apply(apply_transform(data, spec.input_scale, spec.input_offset))
                xn[:, ~valid] = 0.0
                x[k] = xn
        with timer.stage("wait"):
            predictor.lock.acquire()  # reentrant: the forwards below take it again
        try:
            with timer.stage("forward"):
                out = predict_tta(predictor, x, spec.tta)
        finally:
            predictor.lock.release()
        for k, i in enumerate(chunk):
            probs[i] = out[k]
    pieces: dict[int, list[Piece]] = defaultdict(list)
    with timer.stage("blend"):
        for i in active:
            tile = tiles[i]
            weight = tile_weights(tile, spec.overlap, spec.blend) * reads[i][1]
            for block_index, piece in cut_pieces(tile, probs.pop(i), weight, spec.blocks_touching(tile.window)):
                pieces[block_index].append(piece)
    owner = min(b for t in tiles for b, _ in spec.blocks_touching(t.window))
    return TileBatch(dict(pieces), owner, timer.result())


def pieces_for(batch_result: TileBatch, block_index: int) -> BlockPart:
    owner = block_index == batch_result.owner
    return BlockPart(batch_result.pieces.get(block_index, []), batch_result.seconds if owner else None)


def blend_and_write(spec: RunSpec, block: Block, *parts: BlockPart) -> BlockResult:
    """Blend one block, write its products; return its class-code histogram (256 bins) and timers."""
    timer = Timer(spec.profile)
    configure_gdal_cache()
    pieces = [p for part in parts for p in part.pieces]
    with timer.stage("blend"):
        probs, valid = blend_pieces(block.window, pieces, spec.n_classes)
        classes = classify(probs, valid, spec.class_values)
        percent = to_percent(probs, valid) if spec.probabilities_part else None
        confidence = to_percent(probs.max(axis=0), valid) if spec.confidence_part else None
    with timer.stage("write"):
        write_block(spec.landcover_part, block.window, classes)
        if spec.probabilities_part and percent is not None:
            write_block(spec.probabilities_part, block.window, percent)
        if spec.confidence_part and confidence is not None:
            write_block(spec.confidence_part, block.window, confidence)
    for part in parts:
        timer.add(part.seconds)
    return BlockResult(np.bincount(classes.ravel(), minlength=256), timer.result())
