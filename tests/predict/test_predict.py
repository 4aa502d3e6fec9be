"""End-to-end prediction on rasters with a known answer.

The linear test model's output is a known function of each pixel, so the tiled,
blended, streamed result must reproduce it exactly: any seam, offset, lost border,
wrong weight or georeference error shows up as a mismatch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoseg import predict_scene
from geoseg.errors import BandMismatchError, EmptySceneError, OutputExistsError
from geoseg.model.package import load_model
from geoseg.model.runtime import Predictor
from geoseg.testing import BANDS4, expected_probs, pattern_scene, write_raster

FINAL_FILES = sorted(["landcover.tif", "run.json", "landcover.qml", "landcover.tif.aux.xml", "quicklook.png",
                      "report.html", "item.json", ".geoseg.lock"])


def _read(path, band=None):
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


@pytest.mark.parametrize("blend", ["cosine", "linear", "gaussian", "none"])
def test_tiled_prediction_reproduces_known_function(tmp_path, linear_model, blend):
    h, w = 203, 331  # non-square, not a multiple of tile/stride/block
    scene, cls = pattern_scene(h, w)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    r = predict_scene(src, linear_model, tmp_path / "out", blend=blend, block_size=256, probabilities=True,
                      confidence=True, workers=2)
    assert r.tiles > 20  # many overlapping tiles and 2 x 2 blocks
    lc = _read(r.landcover, 1)
    np.testing.assert_array_equal(lc, cls)
    exp = expected_probs(scene)
    prob = _read(r.probabilities).astype(int)
    assert np.abs(prob - np.rint(exp * 100)).max() <= 1
    conf = _read(r.confidence, 1).astype(int)
    assert np.abs(conf - np.rint(exp.max(axis=0) * 100)).max() <= 1
    assert r.class_pixels == {"water": int((cls == 0).sum()), "trees": int((cls == 1).sum()),
                              "built": int((cls == 2).sum())}


def test_probabilities_blend_to_single_pass_values(tmp_path, linear_model):
    """Weighted averaging of identical per-tile probabilities must return them unchanged (no lost weight)."""
    from geoseg.io.grid import Window, plan_tiles
    from geoseg.predict.blend import blend_pieces, cut_pieces, tile_weights

    h, w = 150, 170
    scene, _ = pattern_scene(h, w)
    exp = expected_probs(scene).astype(np.float32)
    plan = plan_tiles(h, w, 64, 32, 1)
    block = Window(0, 0, h, w)
    pieces = []
    for t in plan:
        probs = np.zeros((3, t.window.height, t.window.width), np.float32)
        v = t.valid(block)
        rs, cs = v.slices_in(t.window)
        probs[:, rs, cs] = exp[:, v.row_off:v.row_end, v.col_off:v.col_end]
        weight = tile_weights(t, 32, "cosine")
        mask = np.zeros_like(weight)
        mask[rs, cs] = 1
        pieces += [p for _, p in cut_pieces(t, probs, weight * mask, [(0, block)])]
    out, valid = blend_pieces(block, pieces, 3)
    assert valid.all()
    # 16-bit fixed-point pieces (1/65535) plus float32 round-off, nothing more
    np.testing.assert_allclose(out, exp, rtol=0, atol=1.0 / 65535 / 2 + 1e-6)


def test_georeference_and_cog_structure(tmp_path, linear_model):
    h, w = 600, 700
    scene, cls = pattern_scene(h, w)

    transform = Affine(10.0, 0.0, 423_456.0, 0.0, -10.0, 5_123_456.0)
    src = write_raster(tmp_path / "s.tif", scene, transform=transform, descriptions=BANDS4)
    r = predict_scene(src, linear_model, tmp_path / "out")
    with rasterio.open(src) as a, rasterio.open(r.landcover) as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert (b.width, b.height) == (a.width, a.height)
        assert b.dtypes[0] == "uint8" and b.nodata == 255
        assert b.profile["tiled"] and b.profile["compress"] == "deflate"
        assert b.overviews(1), "COG must have overviews"
        assert b.descriptions[0] == "land cover class"
        assert b.tags(1)["CLASS_1"] == "trees"
        assert b.tags()["AREA_OR_POINT"] == "Area"
        cmap = b.colormap(1)
        assert cmap[0][:3] == (0x41, 0x9B, 0xDF) and cmap[255][3] == 0
        np.testing.assert_array_equal(b.read(1), cls)
        # Overviews are a MODE of class codes: where a 2x2 cell has a strict majority, it must win.
        ov = b.read(1, out_shape=(h // 2, w // 2))
        cells = cls[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3)
        cells = cells.reshape(h // 2, w // 2, 4)
        counts = np.stack([(cells == k).sum(-1) for k in range(3)], -1)
        majority = counts.max(-1) >= 3
        assert majority.sum() > 1000
        np.testing.assert_array_equal(ov[majority], counts.argmax(-1)[majority])
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path / "out")) == FINAL_FILES


def test_nodata_propagates_and_never_gets_a_class(tmp_path, linear_model):
    h, w = 180, 260
    scene, cls = pattern_scene(h, w)
    nod = np.zeros((h, w), bool)
    nod[40:120, 60:150] = True  # bigger than a tile: tiles entirely nodata are skipped
    nod[::17, ::5] = True  # scattered pixels
    nod[:, -3:] = True  # the right scene border
    scene[:, nod] = 0
    src = write_raster(tmp_path / "s.tif", scene, nodata=0, descriptions=BANDS4)
    r = predict_scene(src, linear_model, tmp_path / "out", probabilities=True)
    lc = _read(r.landcover, 1)
    np.testing.assert_array_equal(lc == 255, nod)
    np.testing.assert_array_equal(lc[~nod], cls[~nod])
    assert (_read(r.probabilities)[:, nod] == 255).all()
    assert r.nodata_pixels == nod.sum()


def test_one_band_nodata_without_declared_nodata_uses_card_input_nodata(tmp_path, linear_model):
    scene, cls = pattern_scene(90, 100)
    scene[3, 10:20, 10:20] = 0  # only B8 missing: the pixel cannot be classified
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)  # no nodata declared
    lc = _read(predict_scene(src, linear_model, tmp_path / "out").landcover, 1)
    assert (lc[10:20, 10:20] == 255).all()
    assert (lc != 255).sum() == 90 * 100 - 100


@pytest.mark.parametrize("shape", [(5, 3), (1, 200), (70, 1000), (64, 64), (65, 63)])
def test_tiny_and_odd_shapes(tmp_path, linear_model, shape):
    scene, cls = pattern_scene(*shape)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    r = predict_scene(src, linear_model, tmp_path / "out")
    np.testing.assert_array_equal(_read(r.landcover, 1), cls)


def test_bands_matched_by_name_or_number(tmp_path, linear_model):
    scene, cls = pattern_scene(80, 90)
    shuffled = scene[[3, 0, 2, 1]]  # file order B8, B2, B4, B3
    src = write_raster(tmp_path / "s.tif", shuffled, descriptions=("B8", "B2", "B4", "B3"))
    lc = _read(predict_scene(src, linear_model, tmp_path / "a").landcover, 1)
    np.testing.assert_array_equal(lc, cls)
    lc = _read(predict_scene(src, linear_model, tmp_path / "b", bands=[2, 4, 3, 1]).landcover, 1)
    np.testing.assert_array_equal(lc, cls)
    with pytest.raises(BandMismatchError, match="B3"):
        bad = write_raster(tmp_path / "bad.tif", scene, descriptions=("B2", "B5", "B4", "B8"))
        predict_scene(bad, linear_model, tmp_path / "c")


def test_determinism_across_workers_blocks_and_schedulers(tmp_path, unet_model):
    scene, _ = pattern_scene(300, 333)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    runs = [
        dict(workers=1, block_size=256),
        dict(workers=2, block_size=512),
        dict(workers=2, block_size=1024, scheduler="synchronous"),
        dict(workers=2, block_size=256, scheduler="processes"),
    ]
    outs = []
    for i, kw in enumerate(runs):
        r = predict_scene(src, unet_model, tmp_path / f"o{i}", probabilities=True, tile_size=128, overlap=64, **kw)
        outs.append((_read(r.landcover), _read(r.probabilities)))
    for lc, pr in outs[1:]:
        assert np.array_equal(lc, outs[0][0])
        assert np.array_equal(pr, outs[0][1])
    assert len(np.unique(outs[0][0])) > 1  # not a trivial constant map


def _single_pass(model_path, scene: np.ndarray) -> np.ndarray:
    card, net = load_model(model_path)
    x = card.normalization.apply(scene.astype(np.float32))
    s = card.output_stride
    h, w = x.shape[1:]
    ph, pw = -(-h // s) * s, -(-w // s) * s
    xp = np.zeros((1, x.shape[0], ph, pw), np.float32)
    xp[0, :, :h, :w] = x
    probs = Predictor(card, net, torch.device("cpu"))(xp)[0, :, :h, :w]
    return np.asarray(card.class_values)[probs.argmax(0)]


def test_real_unet_tiled_agrees_with_whole_image_pass(tmp_path, unet_model):
    rng = np.random.default_rng(7)
    h, w = 520, 550  # 4 x 4 tiles of 256 with 128 overlap
    scene, _ = pattern_scene(h, w)
    scene = (scene + rng.integers(0, 400, scene.shape)).astype(np.uint16)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    tiled = _read(predict_scene(src, unet_model, tmp_path / "o", block_size=256).landcover, 1)
    whole = _single_pass(unet_model, scene)
    agree = (tiled == whole).mean()
    assert len(np.unique(whole)) > 1
    assert agree >= 0.999, agree


def test_all_nodata_scene_is_an_error_and_writes_nothing(tmp_path, linear_model):
    scene = np.zeros((4, 70, 90), np.uint16)
    src = write_raster(tmp_path / "s.tif", scene, nodata=0, descriptions=BANDS4)
    with pytest.raises(EmptySceneError, match="no valid pixel"):
        predict_scene(src, linear_model, tmp_path / "out", probabilities=True)
    assert os.listdir(tmp_path / "out") == [".geoseg.lock"]


def test_existing_output_is_kept_without_overwrite_and_on_failure(tmp_path, linear_model, monkeypatch):
    scene, cls = pattern_scene(100, 120)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    out = tmp_path / "out"
    first = predict_scene(src, linear_model, out)
    before = (out / "landcover.tif").read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_scene(src, linear_model, out)

    import geoseg.predict.tasks

    def boom(*a, **k):
        raise RuntimeError("simulated crash while writing a block")

    monkeypatch.setattr(geoseg.predict.tasks, "blend_and_write", boom)
    monkeypatch.setattr("geoseg.predict.graph.blend_and_write", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        predict_scene(src, linear_model, out, overwrite=True, probabilities=True)
    assert (out / "landcover.tif").read_bytes() == before  # untouched
    assert sorted(os.listdir(out)) == FINAL_FILES  # no temp or partial files
    assert first.landcover == str(out / "landcover.tif")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path, unet_model):
    scene, _ = pattern_scene(260, 270)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    cpu = _read(predict_scene(src, unet_model, tmp_path / "c", device="cpu").landcover)
    gpu = _read(predict_scene(src, unet_model, tmp_path / "g", device="cuda").landcover)
    assert (cpu == gpu).mean() >= 0.99


def test_distributed_scheduler_address_gives_the_same_map(tmp_path, linear_model):
    distributed = pytest.importorskip("distributed")
    scene, cls = pattern_scene(150, 170)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, protocol="tcp",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        r = predict_scene(src, linear_model, tmp_path / "o", scheduler=cluster.scheduler_address, block_size=256)
    np.testing.assert_array_equal(_read(r.landcover, 1), cls)


def test_internal_mask_band_is_honoured(tmp_path, linear_model):
    """A GDAL per-dataset mask (not a nodata value) marks invalid pixels too."""
    scene, cls = pattern_scene(120, 140)
    mask = np.full((120, 140), 255, np.uint8)
    mask[30:60, 50:90] = 0
    p = write_raster(tmp_path / "m.tif", scene, descriptions=BANDS4)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(p, "r+") as dst:
        dst.write_mask(mask)
    lc = _read(predict_scene(p, linear_model, tmp_path / "o").landcover, 1)
    np.testing.assert_array_equal(lc == 255, mask == 0)
    np.testing.assert_array_equal(lc[mask > 0], cls[mask > 0])


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_averages_unflipped_probabilities(tmp_path, unet_model, tta):
    """One tile (scene smaller than the tile): the result must equal a hand-made flip average."""
    h, w = 96, 120
    scene, _ = pattern_scene(h, w)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    r = predict_scene(src, unet_model, tmp_path / "o", tta=tta, probabilities=True)
    card, net = load_model(unet_model)
    pred = Predictor(card, net, torch.device("cpu"))
    x = np.zeros((4, 4, 96, 120), np.float32)  # any zero-padded batch; 96 x 120 is stride-aligned
    x[0, :, :, :w] = card.normalization.apply(scene.astype(np.float32))
    views = [(0, False), (0, True), (2, False), (2, True)] if tta == "flips" else \
        [(k, f) for k in range(4) for f in (False, True)]
    acc = 0
    for k, f in views:
        xt = np.rot90(x, k, axes=(2, 3))
        xt = xt[..., ::-1] if f else xt
        y = pred(np.ascontiguousarray(xt))
        y = y[..., ::-1] if f else y
        acc = acc + np.rot90(y, -k, axes=(2, 3))
    probs = (acc / len(views))[0, :, :, :w]
    exp_cls = probs.argmax(0)
    lc = _read(r.landcover, 1)
    np.testing.assert_array_equal(lc, exp_cls)
    assert np.abs(_read(r.probabilities).astype(int) - np.rint(probs * 100)).max() <= 1
    plain = _read(predict_scene(src, unet_model, tmp_path / "p").landcover, 1)
    assert (plain != lc).any()  # augmentation really changed something


def test_predict_with_vector_output(tmp_path, linear_model):
    import geopandas as gpd

    scene, cls = pattern_scene(90, 110)
    scene[:, :10, :10] = 0
    src = write_raster(tmp_path / "s.tif", scene, nodata=0, descriptions=BANDS4)
    r = predict_scene(src, linear_model, tmp_path / "o", vector="gpkg", vector_options={"simplify": None})
    assert r.extra["vector"] == str(tmp_path / "o" / "landcover.gpkg")
    gdf = gpd.read_file(r.extra["vector"])
    assert gdf.crs.to_epsg() == 32633 and gdf.is_valid.all()
    assert abs(gdf.area.sum() - (90 * 110 - 100) * 100.0) < 1e-3  # every valid pixel, no nodata
    for name, value in (("water", 0), ("trees", 1), ("built", 2)):
        expected_m2 = ((cls == value).sum() - (cls[:10, :10] == value).sum()) * 100
        assert abs(gdf.loc[gdf.class_name == name].area.sum() - expected_m2) < 1e-3
    other = tmp_path / "o2"
    other.mkdir()
    (other / "landcover.gpkg").write_text("x")
    with pytest.raises(OutputExistsError, match="landcover.gpkg"):  # refused before any work
        predict_scene(src, linear_model, other, vector="gpkg")
    assert not (other / "landcover.tif").exists()


def test_one_run_per_output_folder_and_stale_temporaries_removed(tmp_path, linear_model):
    from geoseg.errors import OutputLockedError
    from geoseg.io.output import output_dir_lock

    scene, cls = pattern_scene(60, 70)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".landcover.deadbeef0000.part.tif", out / ".landcover.deadbeef0000.part.tif.lock",
             out / ".run.deadbeef0000.json.tmp"]
    keep = out / "notes.txt"
    keep.write_text("not ours")
    with output_dir_lock(out):  # another run is busy in this folder (these are its temporaries)
        for p in stale:
            p.write_bytes(b"in progress")
        with pytest.raises(OutputLockedError, match="another geoseg run"):
            predict_scene(src, linear_model, out)
        assert all(p.exists() for p in stale)  # not touched while the other run holds the lock
    # that run was killed: its temporaries are now stale, and the next run removes them
    predict_scene(src, linear_model, out)
    assert not any(p.exists() for p in stale) and keep.exists()
    np.testing.assert_array_equal(_read(out / "landcover.tif", 1), cls)


def test_gdal_block_cache_is_capped_unless_the_environment_sets_it(monkeypatch):
    """GDAL's default cache (5 % of RAM) would dominate peak memory on large scenes."""
    from rasterio.env import get_gdal_config, set_gdal_config

    from geoseg.io.raster import GDAL_CACHE_BYTES, configure_gdal_cache

    before = get_gdal_config("GDAL_CACHEMAX")
    try:
        set_gdal_config("GDAL_CACHEMAX", 3 * 2**30)
        monkeypatch.setenv("GDAL_CACHEMAX", "3000")  # the user's choice wins
        configure_gdal_cache()
        assert get_gdal_config("GDAL_CACHEMAX") == 3 * 2**30
        monkeypatch.delenv("GDAL_CACHEMAX")
        configure_gdal_cache()
        assert get_gdal_config("GDAL_CACHEMAX") == GDAL_CACHE_BYTES
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_shipped_default_model_maps_the_sample_scene_like_dynamic_world(tmp_path):
    """The committed default model (what `make demo` runs) loads by name and reproduces, on the unseen
    Hong Kong sample, the agreement with its Dynamic World label reported in docs/model.md (93 %)."""
    from pathlib import Path

    from geoseg.model.package import read_card, resolve

    root = Path(__file__).resolve().parents[2]
    sample = root / "tiles" / "hongkong_20160927"
    card = read_card(resolve("default"))
    assert card.trained and len(card.classes) == 9 and len(card.bands) == 9
    res = predict_scene(sample / "image.tif", "default", tmp_path / "out", progress=False)
    with rasterio.open(res.landcover) as p, rasterio.open(sample / "dw_label.tif") as t:
        pred, truth = p.read(1), t.read(1)
        assert p.transform == t.transform and p.crs == t.crs
    valid = truth != 255
    agreement = float((pred[valid] == truth[valid]).mean())
    assert agreement > 0.90, agreement
