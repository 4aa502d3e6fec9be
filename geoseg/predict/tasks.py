"""The two task bodies of a prediction graph; plain functions over paths and value types.

``predict_tiles`` reads a batch of tiles, runs the model and cuts the weighted
probabilities into per-block pieces.  ``blend_and_write`` merges the pieces of
one output block and writes its products.  Both receive a :class:`RunSpec`
(paths and numbers only, picklable) - never open datasets or models - so they
run unchanged on threads, processes or dask.distributed workers.  No dask here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio

from geoseg.io.grid import Block, Tile, Window
from geoseg.io.output import write_block
from geoseg.io.radiometry import apply_transform
from geoseg.io.raster import configure_gdal_cache, read_window
from geoseg.model.runtime import configure_threads, get_predictor, predict_tta
from geoseg.predict.blend import Piece, blend_pieces, classify, cut_pieces, tile_weights, to_percent


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


def predict_tiles(spec: RunSpec, tiles: Sequence[Tile]) -> dict[int, list[Piece]]:
    """Run the model on ``tiles``; return their weighted pieces keyed by output block index.

    Tiles without a valid pixel are skipped.  The forward pass always sees a
    batch of exactly ``spec.batch_size`` tiles (zero-padded), so a tile's
    probabilities never depend on which other tiles share its batch.
    """
    configure_threads(spec.torch_threads)
    configure_gdal_cache()
    predictor = get_predictor(spec.model_path, spec.device, spec.amp)
    norm = predictor.card.normalization
    with rasterio.open(spec.scene_path) as src:
        reads = [read_window(src, t.window, spec.bands, spec.use_masks, spec.input_nodata) for t in tiles]
    active = [i for i, (_, valid) in enumerate(reads) if valid.any()]
    probs: dict[int, np.ndarray] = {}
    for start in range(0, len(active), spec.batch_size):
        chunk = active[start : start + spec.batch_size]
        h, w = tiles[chunk[0]].window.height, tiles[chunk[0]].window.width
        x = np.zeros((spec.batch_size, len(spec.bands), h, w), dtype=np.float32)
        for k, i in enumerate(chunk):
            data, valid = reads[i]
            xn = norm.apply(apply_transform(data, spec.input_scale, spec.input_offset))
            xn[:, ~valid] = 0.0
            x[k] = xn
        out = predict_tta(predictor, x, spec.tta)
        for k, i in enumerate(chunk):
            probs[i] = out[k]
    pieces: dict[int, list[Piece]] = defaultdict(list)
    for i in active:
        tile = tiles[i]
        weight = tile_weights(tile, spec.overlap, spec.blend) * reads[i][1]
        for block_index, piece in cut_pieces(tile, probs.pop(i), weight, spec.blocks_touching(tile.window)):
            pieces[block_index].append(piece)
    return dict(pieces)


def pieces_for(batch_result: dict[int, list[Piece]], block_index: int) -> list[Piece]:
    return batch_result.get(block_index, [])


def blend_and_write(spec: RunSpec, block: Block, *piece_lists: list[Piece]) -> np.ndarray:
    """Blend one block, write its products; return its class-code histogram (256 bins)."""
    configure_gdal_cache()
    pieces = [p for lst in piece_lists for p in lst]
    probs, valid = blend_pieces(block.window, pieces, spec.n_classes)
    classes = classify(probs, valid, spec.class_values)
    write_block(spec.landcover_part, block.window, classes)
    if spec.probabilities_part:
        write_block(spec.probabilities_part, block.window, to_percent(probs, valid))
    if spec.confidence_part:
        write_block(spec.confidence_part, block.window, to_percent(probs.max(axis=0), valid))
    return np.bincount(classes.ravel(), minlength=256)
