"""The two task bodies of a prediction graph; plain functions over paths and value types.

``predict_tiles`` reads a batch of tiles, runs the model and cuts the weighted
probabilities into per-block pieces.  ``blend_and_write`` merges the pieces of
one output block and writes its products as a block file of the run's journal.  Both receive a :class:`RunSpec`
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
from typing import Any

import numpy as np

from geoseg.errors import UnreadableBandError
from geoseg.io.clouds import CloudMask, read_cloud_mask
from geoseg.io.grid import Block, Tile, Window
from geoseg.io.journal import BlockMeta, output_dir_of, write_block_file
from geoseg.io.radiometry import apply_transform
from geoseg.io.raster import (
    GDAL_CACHE_BYTES,
    configure_gdal_cache,
    gdal_options,
    read_window,
    shared_dataset,
)
from geoseg.io.space import writing
from geoseg.model.runtime import configure_threads, get_predictor, predict_tta
from geoseg.predict.blend import CLOUD, Piece, blend_pieces, classify, cut_pieces, tile_weights, to_percent
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
    # the run's block journal folder (geoseg.io.journal): each block task writes block-<index>.tif there
    journal_dir: str = ""
    probabilities: bool = False
    confidence: bool = False
    tta: str = "none"
    # card_dn = dn * input_scale + input_offset per band (geoseg.io.radiometry); None: the DN as read
    input_scale: tuple[float, ...] | None = None
    input_offset: tuple[float, ...] | None = None
    # the concrete runtime and precision (geoseg.model.runtime.choose_runtime), decided in the parent
    runtime: str = "torch"
    precision: str = "f32"
    profile: bool = False
    # the product's own cloud mask or --cloud-mask (geoseg.io.clouds): masked pixels get zero weight
    cloud_mask: CloudMask | None = None
    # the scene is opened once per process and run (io.raster.shared_dataset); GDAL's block cache for it
    run_key: str = ""
    gdal_cache_bytes: int = GDAL_CACHE_BYTES
    # the parent's GDAL settings (io.raster.gdal_config_of_environ), applied in every task: workers on other hosts
    gdal_config: tuple[tuple[str, str], ...] = ()
    # on a dask.distributed cluster: intra-op threads per host name (else torch_threads)
    threads_by_host: tuple[tuple[str, int], ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.class_values)

    def threads_here(self) -> int:
        """Intra-op threads for a task in this process: its host's entry of ``threads_by_host``, else
        ``torch_threads``."""
        if self.threads_by_host:
            import socket

            return dict(self.threads_by_host).get(socket.gethostname(), self.torch_threads)
        return self.torch_threads

    def product_bands(self) -> dict[str, int]:
        """The first band of each product in a block file: landcover 1, then probabilities, then confidence."""
        out = {"landcover": 1}
        if self.probabilities:
            out["probabilities"] = 2
        if self.confidence:
            out["confidence"] = 2 + (self.n_classes if self.probabilities else 0)
        return out

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
    clouds: dict[int, list[tuple[Window, np.ndarray]]] = field(default_factory=dict)  # masked, valid input


@dataclass(frozen=True)
class BlockPart:
    """What a block task receives from one batch: its pieces, and the batch's timers if it is the owner."""

    pieces: list[Piece]
    seconds: dict[str, float] | None = None
    clouds: list[tuple[Window, np.ndarray]] = field(default_factory=list)


@dataclass(frozen=True)
class BlockResult:
    """A block task's result: the class-code histogram (256 bins), the pixels left out as cloud (the mask said
    so and the input was valid) and the timers of the block and its batches."""

    hist: np.ndarray
    seconds: dict[str, float] | None = field(default=None)
    cloud_pixels: int = 0


def predict_tiles(spec: RunSpec, tiles: Sequence[Tile]) -> TileBatch:
    """Run the model on ``tiles`` of the scene file; return their weighted pieces keyed by output block index.

    Tiles without a valid pixel are skipped.  The forward pass always sees a
    batch of exactly ``spec.batch_size`` tiles (zero-padded), so a tile's
    probabilities never depend on which other tiles share its batch.
    """
    timer = Timer(spec.profile)
    configure_gdal_cache(spec.gdal_cache_bytes)
    with gdal_options(spec.gdal_config):
        with timer.stage("read"), shared_dataset(spec.scene_path, spec.run_key) as src:
            reads = _read_tiles(spec, src, tiles)
        return infer_tiles(spec, tiles, reads, timer)  # reads the cloud mask too


def _read_tiles(spec: RunSpec, src: Any, tiles: Sequence[Tile]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tiles' windows with their valid masks.  A scene damaged inside (GDAL cannot decode a block of it) is
    one :class:`~geoseg.errors.UnreadableBandError` line (exit 3), raised after the ``except`` so that it
    crosses a worker process intact (rasterio's own errors do not unpickle)."""
    try:
        return [read_window(src, t.window, spec.bands, spec.use_masks, spec.input_nodata) for t in tiles]
    except Exception as exc:
        if not type(exc).__module__.startswith("rasterio"):
            raise
        detail = str(exc.__cause__ or exc).splitlines()[0] if str(exc.__cause__ or exc) else type(exc).__name__
        where = "" if spec.scene_path.lstrip().startswith("<") else f"{spec.scene_path}: "
        error = UnreadableBandError(f"{where}cannot read the scene's pixels ({detail}); the file is damaged "
                                    "(truncated or corrupt): copy or download it again, then rerun")
    raise error


def predict_array_tiles(spec: RunSpec, tiles: Sequence[Tile], region: np.ndarray, r0: int, c0: int) -> TileBatch:
    """:func:`predict_tiles` over an array: ``region`` holds the selected bands of scene rows ``r0:`` and columns
    ``c0:`` covering the tiles' windows inside the scene (``predict_xarray``)."""
    timer = Timer(spec.profile)
    with timer.stage("read"):
        reads = [_array_window(region, r0, c0, t.window, spec) for t in tiles]
    return infer_tiles(spec, tiles, reads, timer)


def _array_window(region: np.ndarray, r0: int, c0: int, window: Window, spec: RunSpec
                  ) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`geoseg.io.raster.read_window`, from an in-memory region: padded, with its valid mask."""
    data = np.zeros((region.shape[0], window.height, window.width), dtype=np.float32)
    valid = np.zeros((window.height, window.width), dtype=bool)
    inside = window.intersection(Window(0, 0, spec.height, spec.width))
    if inside is None:
        return data, valid
    rs, cs = inside.slices_in(window)
    raw = np.asarray(region[:, inside.row_off - r0:inside.row_end - r0, inside.col_off - c0:inside.col_end - c0])
    data[:, rs, cs] = raw
    v = np.all(np.isfinite(raw), axis=0) if np.issubdtype(raw.dtype, np.floating) else np.ones(raw.shape[1:], bool)
    if spec.input_nodata is not None:
        v &= ~np.any(raw == spec.input_nodata, axis=0)
    valid[rs, cs] = v
    data[:, ~valid] = 0.0  # NaN never reaches the network
    return data, valid


def _clouds(spec: RunSpec, tiles: Sequence[Tile], reads: list[tuple[np.ndarray, np.ndarray]]
            ) -> tuple[list[np.ndarray], dict[int, list[tuple[Window, np.ndarray]]]]:
    """Per tile the pixels that count (valid input, not cloud-masked), and the masked pixels with valid input
    by output block."""
    if spec.cloud_mask is None:
        return [valid for _, valid in reads], {}
    out, by_block = [], defaultdict(list)
    for tile, (_, valid) in zip(tiles, reads, strict=True):
        cloudy = read_cloud_mask(spec.cloud_mask, tile.window) & valid
        out.append(valid & ~cloudy)
        if cloudy.any():
            for block_index, bwin in spec.blocks_touching(tile.window):
                inter = tile.window.intersection(bwin)
                if inter is not None:
                    rs, cs = inter.slices_in(tile.window)
                    by_block[block_index].append((inter, cloudy[rs, cs].copy()))
    return out, dict(by_block)


def infer_tiles(spec: RunSpec, tiles: Sequence[Tile], reads: list[tuple[np.ndarray, np.ndarray]], timer: Timer
                ) -> TileBatch:
    """The model on read tiles (``(data, valid)`` each): normalise, forward in fixed-size batches, weight, cut
    into per-block pieces.  Cloud-masked pixels (``spec.cloud_mask``) get zero weight like nodata, but the
    network still sees their values (as without a mask), so the classes of clear pixels do not change."""
    configure_threads(spec.threads_here())
    with timer.stage("load"):
        predictor = get_predictor(spec.model_path, spec.device, spec.amp, spec.runtime, spec.precision)
    norm = predictor.card.normalization
    with timer.stage("read"):
        counted, clouds = _clouds(spec, tiles, reads)
    active = [i for i, keep in enumerate(counted) if keep.any()]
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
            weight = tile_weights(tile, spec.overlap, spec.blend) * counted[i]
            for block_index, piece in cut_pieces(tile, probs.pop(i), weight, spec.blocks_touching(tile.window)):
                pieces[block_index].append(piece)
    owner = min(b for t in tiles for b, _ in spec.blocks_touching(t.window))
    return TileBatch(dict(pieces), owner, timer.result(), clouds)


def pieces_for(batch_result: TileBatch, block_index: int) -> BlockPart:
    owner = block_index == batch_result.owner
    return BlockPart(batch_result.pieces.get(block_index, []), batch_result.seconds if owner else None,
                     batch_result.clouds.get(block_index, []))


def blend_and_write(spec: RunSpec, block: Block, *parts: BlockPart) -> BlockResult:
    """Blend one block and write its products as one durable block file of the run's journal
    (:func:`geoseg.io.journal.write_block_file`); return its class-code histogram (256 bins) and timers."""
    timer = Timer(spec.profile)
    pieces = [p for part in parts for p in part.pieces]
    with timer.stage("blend"):
        probs, valid = blend_pieces(block.window, pieces, spec.n_classes)
        classes = classify(probs, valid, spec.class_values)
        bands = [classes[None]]
        if spec.probabilities:
            bands.append(to_percent(probs, valid))
        cloud = _cloud_in_block(block, parts) & ~valid
        if spec.confidence:
            confidence = to_percent(probs.max(axis=0), valid)
            confidence[cloud] = CLOUD
            bands.append(confidence[None])
        hist = np.bincount(classes.ravel(), minlength=256)
    with timer.stage("write"):
        # a full disk: one picklable output-error line (exit 5), also from a worker process
        writing(output_dir_of(spec.journal_dir), write_block_file, spec.journal_dir, block.index,
                np.concatenate(bands) if len(bands) > 1 else bands[0], BlockMeta(hist, int(cloud.sum())))
    for part in parts:
        timer.add(part.seconds)
    return BlockResult(hist, timer.result(), int(cloud.sum()))


def _cloud_in_block(block: Block, parts: Sequence[BlockPart]) -> np.ndarray:
    """Pixels of ``block`` that a tile saw as cloud-masked with valid input (no valid input wins: nodata)."""
    out = np.zeros((block.window.height, block.window.width), dtype=bool)
    for part in parts:
        for win, flags in part.clouds:
            rs, cs = win.slices_in(block.window)
            out[rs, cs] |= flags
    return out


def blend_block_arrays(spec: RunSpec, block: Block, probabilities: bool, *parts: BlockPart
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Blend one block for ``predict_xarray``: (class codes (h, w) uint8, probabilities (C, h, w) float32 with
    NaN where no valid input, or None)."""
    pieces = [p for part in parts for p in part.pieces]
    probs, valid = blend_pieces(block.window, pieces, spec.n_classes)
    classes = classify(probs, valid, spec.class_values)
    if not probabilities:
        return classes, None
    probs[:, ~valid] = np.nan
    return classes, probs
