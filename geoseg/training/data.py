"""Training data: image/label pairs, label rasterisation, the spatial split, window sampling, augmentation.

Scenes are read whole into memory (image in its own dtype, labels as int16 class
*indexes*, -1 = ignored), which suits training sets of up to a few GB.  Vector
labels are rasterised onto the image grid; raster labels must share it (or be
resampled with ``align_labels``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError

from geoseg.errors import InputError, InputFileError, ParameterError
from geoseg.io.inputs import open_input
from geoseg.io.radiometry import apply_transform, metadata_transform
from geoseg.io.raster import SceneInfo, match_bands
from geoseg.io.sources import SceneSource
from geoseg.model.card import ClassInfo, InputSpec, Normalization
from geoseg.training.config import TrainConfig

IGNORE = -1  # class index of ignored pixels (nodata, ignore value, unlisted values, other split side)
VECTOR_EXT = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite"}


@dataclass(frozen=True)
class Pair:
    image: str
    label: str
    attribute: str | None = None
    group: str = ""

    @property
    def name(self) -> str:
        return self.image


@dataclass
class TrainScene:
    """One image in memory with its class-index target (``IGNORE`` where excluded)."""

    image_path: str
    label_path: str
    group: str
    x: np.ndarray  # (C, H, W) in sensor units, the raster's dtype
    valid: np.ndarray  # (H, W) bool: every band valid
    target: np.ndarray  # (H, W) int16 class index, IGNORE where not used
    crs: Any = None
    transform: Any = None
    unlisted: dict[int, int] = field(default_factory=dict)  # label values not in the class list -> pixels

    @property
    def shape(self) -> tuple[int, int]:
        return self.target.shape

    def class_counts(self, n_classes: int) -> np.ndarray:
        t = self.target[self.target >= 0]
        return np.bincount(t.ravel(), minlength=n_classes)[:n_classes].astype(np.int64)


# -- finding pairs -----------------------------------------------------------------------------
def _group_of(image: str, level: int) -> str:
    p = Path(image).resolve()
    return str(p) if level <= 0 else str(p.parents[level - 1])


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(os.path.basename(path), pat) for pat in patterns)


def find_pairs(cfg: TrainConfig) -> list[Pair]:
    """Image/label pairs from ``pairs`` and ``images`` + ``labels``; exclusions applied; sorted, unique."""
    out: dict[str, Pair] = {}
    for p in cfg.pairs:
        image, label = str(p["image"]), str(p["label"])
        out[image] = Pair(image, label, p.get("attribute"), _group_of(image, cfg.group_level))
    for pattern in cfg.images:
        hits = sorted(glob.glob(pattern, recursive=True))
        if not hits:
            raise InputFileError(f"no image matches {pattern!r}; check the 'images' glob")
        for image in hits:
            p = Path(image)
            label = cfg.labels.format(dir=str(p.parent), stem=p.stem, name=p.name)
            out[image] = Pair(image, label, None, _group_of(image, cfg.group_level))
    pairs = [p for k, p in sorted(out.items()) if not _excluded(k, cfg.exclude)]
    if not pairs:
        raise InputError("every training image is excluded by 'exclude'; nothing to train on")
    for p in pairs:
        if not os.path.exists(p.label):
            raise InputFileError(f"label {p.label} of image {p.image} does not exist; check 'labels'/'pairs'")
    return pairs


# -- reading -----------------------------------------------------------------------------------
def default_bands(image: str) -> list[str]:
    info, _ = open_input(image)
    names = [(d or "").strip() for d in info.descriptions]
    if all(names):
        return names
    return [f"band{i + 1}" for i in range(info.count)]


def class_lut(classes: Sequence[ClassInfo], ignore_value: int) -> dict[int, int]:
    return {c.value: i for i, c in enumerate(classes) if c.value != ignore_value}


def values_to_index(lab: np.ndarray, lut: dict[int, int], ignore_values: Sequence[int]
                    ) -> tuple[np.ndarray, dict[int, int]]:
    """Label values -> int16 class indexes (IGNORE for ignore values and values not in ``lut``)."""
    out = np.full(lab.shape, IGNORE, dtype=np.int16)
    for value, idx in lut.items():
        out[lab == value] = idx
    unlisted: dict[int, int] = {}
    rest = (out == IGNORE)
    for v in ignore_values:
        rest &= lab != v
    if rest.any():
        vals, counts = np.unique(lab[rest], return_counts=True)
        unlisted = {int(v): int(c) for v, c in zip(vals, counts)}
    return out, unlisted


def rasterize_vector(path: str, attribute: str, classes: Sequence[ClassInfo], out_shape: tuple[int, int],
                     transform: Any, crs: Any, fill: int) -> np.ndarray:
    """Polygons of ``path`` burnt onto a grid as class values (later features win); ``fill`` elsewhere.

    The class attribute may hold class values or class names (case-insensitive).
    """
    import geopandas as gpd
    from rasterio.features import rasterize

    try:
        gdf = gpd.read_file(path)
    except Exception as e:  # pyogrio raises its own DataSourceError types
        raise InputFileError(f"{path} is not a readable vector file ({str(e).splitlines()[0]})") from None
    if attribute not in gdf.columns:
        raise InputError(f"{path} has no attribute {attribute!r} (it has {', '.join(map(str, gdf.columns))}); "
                         "set 'label_attribute'")
    if gdf.crs is None:
        raise InputError(f"{path} has no CRS; set one (e.g. ogr2ogr -a_srs) so it can be placed on the image")
    if crs is not None:
        gdf = gdf.to_crs(crs)
    by_name = {c.name.lower(): c.value for c in classes}
    values = []
    for v in gdf[attribute]:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            values.append(fill)
            continue
        if isinstance(v, str) and not v.strip().lstrip("-").isdigit():
            if v.strip().lower() not in by_name:
                raise InputError(f"{path}: class {v!r} of attribute {attribute!r} is not in the class list "
                                 f"({', '.join(by_name)})")
            values.append(by_name[v.strip().lower()])
        else:
            values.append(int(v))
    shapes = [(g, val) for g, val in zip(gdf.geometry, values) if g is not None and not g.is_empty]
    if not shapes:
        return np.full(out_shape, fill, dtype=np.int32)
    return rasterize(shapes, out_shape=out_shape, transform=transform, fill=fill, dtype="int32")


def _read_label_raster(path: str, ref: rasterio.DatasetReader, align: bool, ignore: int
                       ) -> tuple[np.ndarray, float | None]:
    try:
        src = rasterio.open(path)
    except RasterioIOError:
        raise InputFileError(f"label {path} is not a readable raster or vector file") from None
    with src:
        same = (src.crs == ref.crs and src.width == ref.width and src.height == ref.height
                and np.allclose(tuple(src.transform)[:6], tuple(ref.transform)[:6], rtol=0, atol=1e-9))
        if same:
            return src.read(1), src.nodata
        if not align:
            raise InputError(f"label {path} is not on the grid of image {ref.name} (CRS/transform/size differ); "
                             "resample it, or set align_labels: true to resample with nearest neighbour")
        from rasterio.warp import Resampling, reproject

        dst = np.full((ref.height, ref.width), ignore, dtype=np.int32)
        reproject(rasterio.band(src, 1), dst, dst_transform=ref.transform, dst_crs=ref.crs,
                  resampling=Resampling.nearest, dst_nodata=ignore, src_nodata=src.nodata)
        return dst, src.nodata


# -- images: rasters or products, in the declared units -------------------------------------------
def open_images(pairs: Sequence[Pair], bands: Sequence[str]) -> list[tuple[SceneInfo, SceneSource | None]]:
    """Inspect every image (a raster, a SAFE, a STAC Item, a Landsat folder) before any pixel is read."""
    return [open_input(p.image, wanted=bands) for p in pairs]


def _levels(sources: Sequence[SceneSource]) -> set[tuple[str | None, str | None, str | None]]:
    return {(s.sensor, s.level, s.quantity) for s in sources}


def training_input(cfg: TrainConfig, init: InputSpec | None, infos: Sequence[tuple[SceneInfo, SceneSource | None]],
                   say: Callable[[str], None] | None = None) -> InputSpec | None:
    """What the training DN mean (the card's ``input``): the config's ``input``, else that of the package
    fine-tuned, else the one sensor/level of the products read as reflectance x 10000 (products of several
    levels need an explicit ``input``).  None: undeclared (plain rasters without metadata)."""
    declared = cfg.input_spec()
    products = [s for _, s in infos if s is not None]
    if declared is not None and init is not None and (declared.dn_scale, declared.dn_offset, declared.quantity) != (
            init.dn_scale, init.dn_offset, init.quantity):
        raise ParameterError(f"'input' ({declared.quantity}, DN x {declared.dn_scale:g} + {declared.dn_offset:g}) "
                             f"differs from the fine-tuned package's ({init.quantity}, DN x {init.dn_scale:g} + "
                             f"{init.dn_offset:g}); drop 'input' to train in the package's units")
    spec = declared or init
    if spec is None and products:
        kinds = _levels(products)
        if len(kinds) > 1:
            names = ", ".join(sorted(f"{k[0]} {k[1]}" for k in kinds))
            raise ParameterError(f"the training products mix {names}; give 'input' "
                                 "({sensor, level, quantity, dn_scale, dn_offset}) to say what the model learns")
        sensor, level, quantity = kinds.pop()
        spec = InputSpec(sensor, level, quantity, 1e-4, 0.0)
    if spec is not None and say is not None:
        other = sorted({f"{s.level} ({s.origin})" for s in products
                        if spec.level and s.level and s.level != spec.level})
        if other:
            say(f"warning: training on product level(s) {', '.join(other[:3])} for a model of {spec.level} inputs")
    return spec


def _to_declared(x: np.ndarray, valid: np.ndarray, src: rasterio.DatasetReader, idx: Sequence[int],
                 spec: InputSpec | None, name: str) -> np.ndarray:
    """``x`` in the declared DN: converted from the bands' own scale/offset metadata (as predict does)."""
    scales = [src.scales[i - 1] for i in idx]
    offsets = [src.offsets[i - 1] for i in idx]
    if spec is None:
        if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
            raise ParameterError(f"{name}: its bands carry scale/offset metadata but the training units are "
                                 "undeclared; give 'input' ({sensor, level, quantity, dn_scale, dn_offset})")
        return x
    t = metadata_transform(scales, offsets, spec.dn_scale, spec.dn_offset)
    if t is None:
        return x
    out = apply_transform(x.astype(np.float32), t.scale, t.offset)  # float32
    out[:, ~valid] = 0
    return out


def load_scene(pair: Pair, bands: Sequence[str], classes: Sequence[ClassInfo], cfg: TrainConfig,
               opened: tuple[SceneInfo, SceneSource | None] | None = None, spec: InputSpec | None = None
               ) -> TrainScene:
    """Read an image (the named bands, in the declared DN ``spec``) and its labels as class indexes on the
    image grid.  ``opened``: the image as :func:`open_images` inspected it."""
    info, _ = opened or open_input(pair.image, wanted=bands)
    idx = match_bands(bands, info.descriptions, info.count)
    with rasterio.open(info.gdal_name) as src:
        x = src.read(idx)
        if any(MaskFlags.all_valid not in src.mask_flag_enums[i - 1] for i in idx):
            valid = np.all(src.read_masks(idx) > 0, axis=0)
        elif cfg.input_nodata is not None:
            valid = ~np.any(x == cfg.input_nodata, axis=0)
        else:
            valid = np.ones(x.shape[1:], dtype=bool)
        if np.issubdtype(x.dtype, np.floating):
            valid &= np.all(np.isfinite(x), axis=0)
            x = np.where(np.isfinite(x), x, 0).astype(x.dtype)
        x = _to_declared(x, valid, src, idx, spec, pair.image)
        ext = Path(pair.label).suffix.lower()
        ignore_values = [cfg.ignore_index]
        if ext in VECTOR_EXT:
            lab = rasterize_vector(pair.label, pair.attribute or cfg.label_attribute, classes,
                                   (src.height, src.width), src.transform, src.crs, cfg.ignore_index)
        else:
            lab, nodata = _read_label_raster(pair.label, src, cfg.align_labels, cfg.ignore_index)
            if nodata is not None and float(nodata).is_integer():
                ignore_values.append(int(nodata))
        crs, transform = src.crs, src.transform
    lut = class_lut(classes, cfg.ignore_index)
    for v in ignore_values[1:]:
        lut.pop(v, None)
    target, unlisted = values_to_index(lab, lut, ignore_values)
    target[~valid] = IGNORE
    return TrainScene(pair.image, pair.label, pair.group, x, valid, target, crs, transform, unlisted)


# -- spatial split -----------------------------------------------------------------------------
def validation_groups(images: Sequence[tuple[str, str]], val_scenes: Sequence[str]) -> set[str]:
    """The scene groups held out by ``val_scenes`` patterns: every group with a matching image
    (``images``: (image path, group) pairs).  The same rule for training and for re-evaluation."""
    groups = {group for image, group in images if _excluded(image, val_scenes)}
    if not groups:
        raise ParameterError(f"no image matches val_scenes {list(val_scenes)}; use fnmatch patterns of "
                             "image paths such as '*/paris/*'")
    return groups


def validation_pairs(cfg: TrainConfig) -> list[Pair]:
    """The validation images of a training config split by whole scenes with ``val_scenes``
    (what ``geoseg evaluate --model M --data TRAIN.yaml`` predicts), without reading any raster."""
    if cfg.split != "scenes" or not cfg.val_scenes:
        raise ParameterError("only a training config with 'split: scenes' and 'val_scenes' patterns names its "
                             "validation images; list them in an evaluation config (images: [{image, label}])")
    pairs = find_pairs(cfg)
    groups = validation_groups([(p.image, p.group) for p in pairs], cfg.val_scenes)
    return [p for p in pairs if p.group in groups]


def split_scenes(scenes: list[TrainScene], cfg: TrainConfig
                 ) -> tuple[list[TrainScene], list[TrainScene], dict[str, Any]]:
    """(train, validation, description).  Never shares a labelled pixel (or a scene group) between sides."""
    rng = np.random.default_rng([cfg.seed, 7])
    if cfg.split == "scenes":
        groups = sorted({s.group for s in scenes})
        if cfg.val_scenes:
            val_groups = validation_groups([(s.image_path, s.group) for s in scenes], cfg.val_scenes)
        else:
            n_val = int(round(cfg.val_fraction * len(groups)))
            if cfg.val_fraction > 0:
                n_val = max(1, n_val)
            if n_val >= len(groups):
                raise ParameterError(f"{len(groups)} scene group(s) cannot be split into training and validation; "
                                     "add scenes or use split: blocks")
            val_groups = set(rng.choice(groups, size=n_val, replace=False).tolist()) if n_val else set()
        train = [s for s in scenes if s.group not in val_groups]
        val = [s for s in scenes if s.group in val_groups]
        if not train:
            raise ParameterError("every scene is in validation; leave some for training")
        desc: dict[str, Any] = {"split": "scenes", "validation_groups": sorted(val_groups)}
        return train, val, desc
    # blocks: a checkerboard-free random choice of square blocks per scene, with a buffer
    b, buf = cfg.val_block, cfg.val_buffer
    train, val = [], []
    n_blocks = n_val_blocks = 0
    for s in scenes:
        h, w = s.shape
        nr, nc = -(-h // b), -(-w // b)
        n = nr * nc
        k = int(round(cfg.val_fraction * n))
        if cfg.val_fraction > 0 and n > 1:
            k = max(1, min(k, n - 1))
        else:
            k = min(k, n - 1)
        chosen = rng.choice(n, size=k, replace=False) if k else np.array([], dtype=int)
        vmask = np.zeros((h, w), dtype=bool)
        bmask = np.zeros((h, w), dtype=bool)
        for i in chosen:
            r, c = divmod(int(i), nc)
            vmask[r * b:(r + 1) * b, c * b:(c + 1) * b] = True
            bmask[max(0, r * b - buf):(r + 1) * b + buf, max(0, c * b - buf):(c + 1) * b + buf] = True
        t_train = s.target.copy()
        t_train[bmask] = IGNORE
        t_val = np.full_like(s.target, IGNORE)
        t_val[vmask] = s.target[vmask]
        train.append(replace(s, target=t_train))
        if k:
            val.append(replace(s, target=t_val))
        n_blocks += n
        n_val_blocks += k
    desc = {"split": "blocks", "block_px": b, "buffer_px": buf, "blocks": n_blocks,
                            "validation_blocks": n_val_blocks}
    return train, val, desc


# -- statistics --------------------------------------------------------------------------------
def band_stats(scenes: Sequence[TrainScene]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation (sensor units) over the valid pixels of ``scenes``."""
    c = scenes[0].x.shape[0]
    n = 0
    s1 = np.zeros(c)
    s2 = np.zeros(c)
    for sc in scenes:
        # statistics over the pixels this side of the split may use (valid input, not held out)
        use = sc.valid & (sc.target != IGNORE) if (sc.target != IGNORE).any() else sc.valid
        v = sc.x[:, use].astype(np.float64)
        n += v.shape[1]
        s1 += v.sum(axis=1)
        s2 += (v * v).sum(axis=1)
    if n == 0:
        raise InputError("the training images have no valid pixel; check their nodata")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def auto_class_weights(counts: np.ndarray) -> list[float]:
    """Inverse square root of class frequency, normalised to mean 1 over present classes, clipped to [0.05, 20]."""
    counts = counts.astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    w[present] /= w[present].mean()
    w = np.clip(w, 0.0, 20.0)
    w[present] = np.maximum(w[present], 0.05)
    w[~present] = 1.0
    return [float(v) for v in w]


# -- sampling ----------------------------------------------------------------------------------
class WindowSampler:
    """Draws training windows (scene, row, col): centred on random labelled pixels, or class-balanced."""

    def __init__(self, scenes: Sequence[TrainScene], n_classes: int, window: int, sampling: str,
                 balanced_fraction: float, seed: int, max_points: int = 50_000) -> None:
        self.scenes, self.window, self.sampling = list(scenes), window, sampling
        self.balanced_fraction = balanced_fraction if sampling == "balanced" else 0.0
        self.seed = seed
        rng = np.random.default_rng([seed, 11])
        self.points: list[np.ndarray] = []  # per scene: flat indexes of labelled pixels (subsampled)
        self.class_points: list[list[np.ndarray]] = []  # per scene, per class
        self.counts = np.zeros((len(self.scenes), n_classes), dtype=np.int64)
        for si, s in enumerate(self.scenes):
            flat = s.target.ravel()
            lab = np.flatnonzero(flat >= 0)
            self.points.append(rng.choice(lab, size=min(len(lab), 4 * max_points), replace=False) if len(lab) else lab)
            per = []
            for k in range(n_classes):
                pk = np.flatnonzero(flat == k)
                self.counts[si, k] = len(pk)
                per.append(rng.choice(pk, size=min(len(pk), max_points), replace=False) if len(pk) else pk)
            self.class_points.append(per)
        self.scene_weight = np.array([len(p) for p in self.points], dtype=np.float64)
        if self.scene_weight.sum() == 0:
            raise InputError("the training scenes have no labelled pixel (all nodata/ignored); check the labels")
        self.scene_weight /= self.scene_weight.sum()
        self.present = np.flatnonzero(self.counts.sum(axis=0) > 0)

    def draw(self, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        out = []
        for _ in range(n):
            if self.balanced_fraction > 0 and rng.random() < self.balanced_fraction:
                k = int(rng.choice(self.present))
                w = self.counts[:, k].astype(np.float64)
                si = int(rng.choice(len(self.scenes), p=w / w.sum()))
                pts = self.class_points[si][k]
            else:
                si = int(rng.choice(len(self.scenes), p=self.scene_weight))
                pts = self.points[si]
            flat = int(pts[rng.integers(len(pts))])
            h, w_ = self.scenes[si].shape
            r, c = divmod(flat, w_)
            jitter = self.window // 4
            r0 = r - self.window // 2 + int(rng.integers(-jitter, jitter + 1))
            c0 = c - self.window // 2 + int(rng.integers(-jitter, jitter + 1))
            r0 = int(np.clip(r0, min(0, h - self.window), max(0, h - self.window)))
            c0 = int(np.clip(c0, min(0, w_ - self.window), max(0, w_ - self.window)))
            # keep the sampled pixel inside the window
            r0 = min(max(r0, r - self.window + 1), r)
            c0 = min(max(c0, c - self.window + 1), c)
            out.append((si, r0, c0))
        return out


def crop(scene: TrainScene, r0: int, c0: int, size_h: int, size_w: int | None = None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x float32 (C,h,w), valid (h,w), target (h,w)) of a window, padded (invalid, IGNORE) outside the scene."""
    size_w = size_h if size_w is None else size_w
    c = scene.x.shape[0]
    h, w = scene.shape
    x = np.zeros((c, size_h, size_w), dtype=np.float32)
    valid = np.zeros((size_h, size_w), dtype=bool)
    t = np.full((size_h, size_w), IGNORE, dtype=np.int16)
    rs, re = max(r0, 0), min(r0 + size_h, h)
    cs, ce = max(c0, 0), min(c0 + size_w, w)
    if rs < re and cs < ce:
        x[:, rs - r0:re - r0, cs - c0:ce - c0] = scene.x[:, rs:re, cs:ce]
        valid[rs - r0:re - r0, cs - c0:ce - c0] = scene.valid[rs:re, cs:ce]
        t[rs - r0:re - r0, cs - c0:ce - c0] = scene.target[rs:re, cs:ce]
    return x, valid, t


def augment(x: np.ndarray, valid: np.ndarray, t: np.ndarray, rng: np.random.Generator, d4: bool,
            brightness: float, contrast: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brightness/contrast jitter in sensor units (valid pixels only), then a random D4 transform."""
    if (brightness > 0 or contrast > 0) and valid.any():
        m = x[:, valid].mean(axis=1)[:, None]
        f = 1.0 + (rng.uniform(-contrast, contrast) if contrast > 0 else 0.0)
        b = rng.uniform(-brightness, brightness) if brightness > 0 else 0.0
        xv = (x[:, valid] - m) * f + m + b
        x[:, valid] = np.maximum(xv, 0.0)
    if d4:
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        x, valid, t = (np.rot90(a, k, axes=(-2, -1)) for a in (x, valid, t))
        if flip:
            x, valid, t = (a[..., ::-1] for a in (x, valid, t))
        x, valid, t = (np.ascontiguousarray(a) for a in (x, valid, t))
    return x, valid, t


def normalise(x: np.ndarray, valid: np.ndarray, norm: Normalization) -> np.ndarray:
    """Exactly what prediction does: the card's normalisation, invalid pixels set to 0."""
    xn = norm.apply(x)
    xn[..., ~valid] = 0.0
    return xn


def val_windows(scenes: Sequence[TrainScene], size: int) -> list[tuple[int, int, int]]:
    """Non-overlapping windows covering every labelled pixel of ``scenes`` (windows without labels skipped)."""
    out = []
    for si, s in enumerate(scenes):
        h, w = s.shape
        for r0 in range(0, h, size):
            for c0 in range(0, w, size):
                if (s.target[r0:r0 + size, c0:c0 + size] >= 0).any():
                    out.append((si, r0, c0))
    return out
