"""Pure value types for tiling a scene: windows, tiles, output blocks.

Nothing here does I/O or knows about torch or dask.  All coordinates are
pixel offsets in the scene (row, col), with the origin at the scene's upper-left
corner.  A tile may extend past the scene's bottom/right edge (by less than the
model's output stride, or when the scene is smaller than one tile): the reader
fills that part as nodata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from geoseg.errors import ParameterError

#: Output blocks are multiples of the output GeoTIFF's internal tile size, so that every
#: internal tile is written exactly once.
BLOCK_ALIGN = 256


def align_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: ``[row_off, row_off + height) x [col_off, col_off + width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    def intersection(self, other: Window) -> Window | None:
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def slices_in(self, outer: Window) -> tuple[slice, slice]:
        """Slices that select this window inside an array covering ``outer``."""
        r, c = self.row_off - outer.row_off, self.col_off - outer.col_off
        return slice(r, r + self.height), slice(c, c + self.width)


@dataclass(frozen=True)
class Tile:
    """One model input: the pixels read (``window``) and which of its sides touch the scene border.

    Sides on the scene border are not tapered by the blend window, so the scene's
    edge pixels keep full weight.
    """

    index: int
    window: Window
    top: bool
    bottom: bool
    left: bool
    right: bool

    def valid(self, scene: Window) -> Window:
        """The part of the tile that lies inside the scene."""
        inter = self.window.intersection(scene)
        assert inter is not None
        return inter


@dataclass(frozen=True)
class TilePlan:
    """All tiles of a scene, in row-major order, with the parameters that made them."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    overlap: int
    align: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    @property
    def scene(self) -> Window:
        return Window(0, 0, self.height, self.width)

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def __iter__(self) -> Iterator[Tile]:
        n_rows, n_cols = len(self.row_offsets), len(self.col_offsets)
        for i, r in enumerate(self.row_offsets):
            for j, c in enumerate(self.col_offsets):
                yield Tile(
                    index=i * n_cols + j,
                    window=Window(r, c, self.tile_height, self.tile_width),
                    top=i == 0,
                    bottom=i == n_rows - 1,
                    left=j == 0,
                    right=j == n_cols - 1,
                )

    @property
    def computed_pixels(self) -> int:
        """Pixels the model processes, overlap and padding included."""
        return len(self) * self.tile_height * self.tile_width


def axis_offsets(size: int, tile: int, overlap: int, align: int) -> tuple[int, tuple[int, ...]]:
    """Tile length and tile offsets along one axis.

    Offsets are multiples of ``align`` (the network's output stride), so every tile
    sees the same pixel phase as a single whole-image pass.  Regular offsets step by
    ``tile - overlap``; the last tile is pulled back to the smallest aligned offset
    that still reaches the scene edge, so it overhangs by less than ``align`` pixels.
    A scene shorter than one tile gets a single tile of ``align_up(size, align)``.
    """
    length = min(tile, align_up(size, align))
    if size <= length:
        return length, (0,)
    stride = tile - overlap
    offsets = []
    off = 0
    while off + length < size:
        offsets.append(off)
        off += stride
    last = align_up(size - length, align)
    if last > offsets[-1]:
        offsets.append(last)
    return length, tuple(offsets)


def plan_tiles(height: int, width: int, tile_size: int, overlap: int, align: int = 32) -> TilePlan:
    """Plan the tiles of a ``height`` x ``width`` scene.  Raises ParameterError on bad sizes."""
    if height <= 0 or width <= 0:
        raise ParameterError(f"scene size {height}x{width} is empty; give a raster with at least one pixel")
    if align <= 0:
        raise ParameterError(f"output stride {align} must be positive; fix 'output_stride' in the model card")
    if tile_size <= 0 or tile_size % align:
        raise ParameterError(
            f"tile size {tile_size} is not a positive multiple of the model's output stride {align}; "
            f"use e.g. {max(align, align_up(max(tile_size, 1), align))}"
        )
    if overlap < 0 or overlap % align or overlap >= tile_size:
        hint = min(align_up(max(overlap, 0), align), tile_size - align)
        raise ParameterError(
            f"overlap {overlap} must be a multiple of the output stride {align} and smaller than the "
            f"tile size {tile_size}; use e.g. --overlap {hint}"
        )
    th, rows = axis_offsets(height, tile_size, overlap, align)
    tw, cols = axis_offsets(width, tile_size, overlap, align)
    return TilePlan(height, width, th, tw, overlap, align, rows, cols)


@dataclass(frozen=True)
class Block:
    """One output block: the unit that is blended, classified and written at once."""

    index: int
    window: Window


def check_block_size(block_size: int, align: int = BLOCK_ALIGN) -> int:
    """The one block-size rule: a positive multiple of ``align`` (the GeoTIFF tile for anything that writes
    blocks into a raster, 1 for readers), else a :class:`ParameterError` naming the nearest valid value.
    Never rounded silently."""
    bs = int(block_size)
    if bs <= 0 or bs % align:
        if align == 1:
            raise ParameterError(f"block size {block_size} must be a positive number of pixels; "
                                 "use e.g. --block-size 1024")
        raise ParameterError(
            f"block size {block_size} must be a positive multiple of {align} (the GeoTIFF tile size); "
            f"use e.g. --block-size {max(align, align_up(max(bs, 1), align))}"
        )
    return bs


@dataclass(frozen=True)
class BlockGrid:
    """The block layout of a raster: row-major blocks of ``block_size`` clipped at the right/bottom edge;
    block ``(r, c)`` has index ``r * n_cols + c``.  Every block-wise pass of geoseg uses this layout."""

    height: int
    width: int
    block_size: int

    @property
    def n_rows(self) -> int:
        return -(-self.height // self.block_size)

    @property
    def n_cols(self) -> int:
        return -(-self.width // self.block_size)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def window(self, index: int) -> Window:
        """The pixels of block ``index``."""
        r, c = divmod(index, self.n_cols)
        bs = self.block_size
        return Window(r * bs, c * bs, min(bs, self.height - r * bs), min(bs, self.width - c * bs))

    def windows(self) -> list[Window]:
        return [self.window(i) for i in range(len(self))]

    def blocks(self) -> list[Block]:
        return [Block(i, self.window(i)) for i in range(len(self))]


def plan_blocks(height: int, width: int, block_size: int, align: int = BLOCK_ALIGN) -> list[Block]:
    """Split the scene into output blocks of ``block_size`` (clipped at the right/bottom edge)."""
    return BlockGrid(height, width, check_block_size(block_size, align)).blocks()


def batches(tiles: list[Tile], batch_size: int) -> list[list[Tile]]:
    """Consecutive groups of ``batch_size`` tiles in row-major order (the last may be shorter)."""
    if batch_size <= 0:
        raise ParameterError(f"batch size {batch_size} must be positive; use e.g. 4")
    return [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
