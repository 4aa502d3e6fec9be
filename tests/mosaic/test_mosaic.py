"""``geoseg mosaic``: scenes predicted in two UTM zones onto one grid, pixel by pixel for each overlap rule,
the grid options, the errors, the sidecars and seamless polygons."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer

from geoseg.cli import cli
from geoseg.errors import InputError, OutputExistsError, ParameterError
from geoseg.mosaic import mosaic_scenes
from geoseg.mosaic.rules import compose, observed, winners
from geoseg.testing import prediction_folder

N = 40
A_ORIGIN = (734_000.0, 4_988_000.0)  # EPSG:32630, near 0° E 45° N, close to the zone border


def _b_origin() -> tuple[float, float]:
    """B (EPSG:32631) starts at A's pixel (row 10, col 20): it covers A's south-east and reaches beyond."""
    x, y = Transformer.from_crs(32630, 32631, always_xy=True).transform(A_ORIGIN[0] + 200, A_ORIGIN[1] - 100)
    return round(x, -1), round(y, -1)


def _scene_a() -> tuple[np.ndarray, np.ndarray]:
    lc, conf = np.ones((N, N), np.uint8), np.full((N, N), 60, np.uint8)
    lc[30:34, 25:36], conf[30:34, 25:36] = 255, 254  # cloud where B observes
    lc[2:6, 2:7], conf[2:6, 2:7] = 255, 254  # cloud where no other scene observes
    lc[:, 0], conf[:, 0] = 255, 255  # nodata
    return lc, conf


def _scene_b() -> tuple[np.ndarray, np.ndarray]:
    lc, conf = np.full((N, N), 2, np.uint8), np.full((N, N), 80, np.uint8)
    conf[20:30], conf[30:] = 40, 60  # below A's 60, then a tie with A
    return lc, conf


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    bx, by = _b_origin()
    a = prediction_folder(root / "A", *_scene_a(), crs="EPSG:32630", acquired="2021-06-01T10:00:00Z",
                          transform=Affine(10, 0, A_ORIGIN[0], 0, -10, A_ORIGIN[1]))
    b = prediction_folder(root / "B", *_scene_b(), crs="EPSG:32631", acquired="2021-06-03T10:00:00Z",
                          transform=Affine(10, 0, bx, 0, -10, by))
    for folder in (a, b):
        (folder / "item.json").write_text("{}\n")
    return a, b


def _lookup(lc, conf, origin, xs, ys):
    col, row = np.floor((xs - origin[0]) / 10).astype(int), np.floor((origin[1] - ys) / 10).astype(int)
    inside = (col >= 0) & (col < N) & (row >= 0) & (row < N)
    c, r = np.clip(col, 0, N - 1), np.clip(row, 0, N - 1)
    return np.where(inside, lc[r, c], 255), np.where(inside, conf[r, c], 255)


def _expected(transform, shape, rule):
    """The mosaic computed independently: pyproj for B's pixel centres, the rule in plain numpy; and the pixels
    where B's nearest pixel is ambiguous (within 0.01 px of B's pixel edges: floating point)."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    to_b = Transformer.from_crs(32630, 32631, always_xy=True)
    a_lc, a_conf = _scene_a()
    b_lc, b_conf = _scene_b()
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    al, ac = _lookup(a_lc, a_conf, A_ORIGIN, xs, ys)
    looks = []
    for dc, dr in ((0, 0), (0.01, 0.01), (-0.01, 0.01), (0.01, -0.01), (-0.01, -0.01)):
        bx, by = to_b.transform(*(transform @ (cols + 0.5 + dc, rows + 0.5 + dr)))
        looks.append(_lookup(b_lc, b_conf, _b_origin(), np.asarray(bx), np.asarray(by)))
    bl, bc = looks[0]
    ambiguous = np.zeros(shape, bool)
    for ll, cc in looks[1:]:
        ambiguous |= (ll != bl) | (cc != bc)
    oa, ob = (al != 255) & (ac <= 100), (bl != 255) & (bc <= 100)
    pick_a = {"confidence": oa & (~ob | (ac >= bc)), "first": oa, "last": oa & ~ob}[rule]
    pick_b = ob & ~pick_a
    lc = np.where(pick_a, al, np.where(pick_b, bl, 255))
    cloud = (ac == 254) | (bc == 254)
    conf = np.where(pick_a, ac, np.where(pick_b, bc, np.where(cloud, 254, 255)))
    return lc, conf, ambiguous


@pytest.mark.parametrize("rule", ["confidence", "first", "last"])
def test_each_rule_gives_the_expected_pixels_on_the_grid(scenes, tmp_path, rule):
    r = mosaic_scenes([str(s) for s in scenes], tmp_path / "m", crs="EPSG:32630", res=10, rule=rule,
                      scheduler="synchronous")
    with rasterio.open(r.landcover) as src, rasterio.open(r.confidence) as csrc:
        lc, conf, t = src.read(1), csrc.read(1), src.transform
        assert src.crs.to_epsg() == 32630 and src.nodata == 255
    # default bounds: the union of both footprints, snapped to 10 m: A sits on the grid's lattice at its corner
    assert (t.c, t.f) == (A_ORIGIN[0], A_ORIGIN[1]) and t.a == 10 and t.e == -10
    assert lc.shape[0] > N and lc.shape[1] > N
    want_lc, want_conf, ambiguous = _expected(t, lc.shape, rule)
    assert ambiguous.mean() < 0.01
    ok = ~ambiguous
    np.testing.assert_array_equal(lc[ok], want_lc[ok])
    np.testing.assert_array_equal(conf[ok], want_conf[ok])
    # the rules really differ where both observe: A below B's 80, B below A's 60, and the tie
    assert lc[12, 38] == (1 if rule == "first" else 2)  # B confidence 80
    assert (lc[1:N, 1:N][ok[1:N, 1:N]] != 255).sum() > 0
    # a masked pixel never beats an observed one, whatever the rule: A's cloud under B is B's class
    assert set(np.unique(lc[31:33, 28:33])) == {2}
    # a cloud nobody else observes stays a cloud in the confidence
    assert (conf[2:6, 2:7] == 254).all() and (lc[2:6, 2:7] == 255).all()
    assert r.scene_pixels["A"] + r.scene_pixels["B"] + r.nodata_pixels == lc.size
    assert r.scene_pixels["A"] == int((lc == 1).sum()) and r.scene_pixels["B"] == int((lc == 2).sum())


def test_the_rule_functions_on_known_stacks():
    cls = np.array([[[1, 1, 255, 1]], [[2, 2, 2, 255]]], np.uint8)
    conf = np.array([[[50, 70, 254, 90]], [[60, 70, 10, 255]]], np.uint8)
    obs = observed(cls, conf)
    assert winners(obs, conf, "confidence").tolist() == [[1, 0, 1, 0]]  # the tie goes to the first
    assert winners(obs, conf, "first").tolist() == [[0, 0, 1, 0]]
    assert winners(obs, conf, "last").tolist() == [[1, 1, 1, 0]]
    assert compose(cls, np.array([[1, 0, -1, 0]])).tolist() == [[2, 1, 255, 1]]


def test_like_takes_the_whole_grid_and_bounds_cut_it(scenes, tmp_path):
    a, b = scenes
    full = mosaic_scenes([str(a), str(b)], tmp_path / "full", crs="EPSG:32630", res=10, scheduler="synchronous")
    like = mosaic_scenes([str(a), str(b)], tmp_path / "like", like=b / "landcover.tif", scheduler="synchronous")
    with rasterio.open(like.landcover) as src, rasterio.open(b / "landcover.tif") as bsrc:
        assert (src.crs, src.transform, src.shape) == (bsrc.crs, bsrc.transform, bsrc.shape)
        got, b_lc = src.read(1), bsrc.read(1)
    # on B's own grid B is read exactly; rule confidence: B wins where its confidence is above A's or A is absent
    assert (got[:20][b_lc[:20] == 2] == 2).all()
    x0, y1 = A_ORIGIN[0] + 105, A_ORIGIN[1] - 95  # snapped outward to the 10 m lattice
    cut = mosaic_scenes([str(a), str(b)], tmp_path / "cut", crs="EPSG:32630", res=10, scheduler="synchronous",
                        bounds=(x0, y1 - 200, x0 + 300, y1))
    with rasterio.open(cut.landcover) as src, rasterio.open(full.landcover) as fsrc:
        assert (src.transform.c, src.transform.f) == (A_ORIGIN[0] + 100, A_ORIGIN[1] - 90)
        assert src.shape == (21, 31)
        np.testing.assert_array_equal(src.read(1), fsrc.read(1)[9:30, 10:41])


def test_sidecars_and_the_stac_item_link_the_inputs(scenes, tmp_path):
    r = mosaic_scenes([str(s) for s in scenes], tmp_path / "m", scheduler="synchronous")
    out = tmp_path / "m"
    for name in ("landcover.tif", "confidence.tif", "run.json", "landcover.qml", "confidence.qml",
                 "landcover.tif.aux.xml", "quicklook.png", "report.html", "item.json"):
        assert (out / name).is_file(), name
    assert r.probabilities is None  # the inputs have none
    item = json.loads((out / "item.json").read_text())
    derived = [link for link in item["links"] if link["rel"] == "derived_from"]
    assert [(out / link["href"]).resolve() for link in derived] == [(s / "item.json").resolve() for s in scenes]
    props = item["properties"]
    assert props["datetime"] is None and props["start_datetime"] == "2021-06-01T10:00:00Z"
    assert props["end_datetime"] == "2021-06-03T10:00:00Z" and props["geoseg:rule"] == "confidence"
    classes = item["assets"]["landcover"]["classification:classes"]
    assert [c["value"] for c in classes] == [0, 1, 2, 255]
    assert "Mosaic" in props["processing:lineage"]
    report = (out / "report.html").read_text()
    assert 'id="mosaic-inputs"' in report and "Land-cover mosaic of 2 scenes" in report
    with rasterio.open(r.landcover) as src:
        assert src.colormap(1)[1][:3] == (0x39, 0x7D, 0x49)
        assert src.tags()["GEOSEG_MOSAIC_RULE"] == "confidence"
    record = json.loads((out / "run.json").read_text())
    assert [i["id"] for i in record["mosaic"]["inputs"]] == ["A", "B"]
    assert _stac_errors(item) == []
    from geoseg.delivery.cog_check import validate_cog

    assert validate_cog(r.landcover) == [] and validate_cog(r.confidence) == []


def _stac_errors(item):
    """tests/delivery/stac_schemas.py's offline validation (importable when this file runs on its own too)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "delivery")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module("stac_schemas").stac_errors(item)


def test_vector_polygons_are_valid_and_seamless_across_the_scene_border(scenes, tmp_path):
    import geopandas as gpd
    from rasterio.features import shapes

    res = CliRunner().invoke(cli, ["mosaic", *map(str, scenes), "-o", str(tmp_path / "m"), "--vector", "gpkg",
                                   "--scheduler", "synchronous", "--block-size", "256", "-q"])
    assert res.exit_code == 0, res.output
    df = gpd.read_file(tmp_path / "m" / "landcover.gpkg", layer="landcover")
    assert df.geometry.is_valid.all()
    with rasterio.open(tmp_path / "m" / "landcover.tif") as src:
        lc, t = src.read(1), src.transform
    # one polygon per connected patch of the whole mosaic (a single-pass polygonization has no seams)
    want = [(int(v), g) for g, v in shapes(lc, mask=lc != 255, transform=t)]
    assert sorted(df["class"]) == sorted(v for v, _ in want) == [1, 2]  # B's patch crosses A's border: one piece
    assert abs(df.geometry.area.sum() - (lc != 255).sum() * 100.0) < 1e-3


def _small(path, confidence=True, **kwargs):
    """A tiny prediction folder on A's grid (8 x 8 px)."""
    return prediction_folder(path, np.zeros((8, 8)), np.zeros((8, 8)) if confidence else None, crs="EPSG:32630",
                             transform=Affine(10, 0, A_ORIGIN[0], 0, -10, A_ORIGIN[1]), **kwargs)


def test_errors_are_one_line_and_write_nothing(scenes, tmp_path):
    a, b = scenes
    run = CliRunner().invoke
    res = run(cli, ["mosaic", "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "no input given" in res.output
    other = _small(tmp_path / "C", classes=({"value": 0, "name": "forest", "color": "#00FF00"},))
    res = run(cli, ["mosaic", str(a), str(other), "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "has classes 0=forest but" in res.output and "Traceback" not in res.output
    res = run(cli, ["mosaic", str(a), str(_small(tmp_path / "D", model_id="another")), "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "predicted by model another" in res.output
    no_conf = _small(tmp_path / "E", confidence=False)
    res = run(cli, ["mosaic", str(a), str(no_conf), "-o", str(tmp_path / "m")])
    assert res.exit_code == 2 and "--rule confidence needs confidence.tif" in res.output
    res = run(cli, ["mosaic", str(a), "--like", str(a / "landcover.tif"), "--crs", "EPSG:32630", "-o",
                    str(tmp_path / "m")])
    assert res.exit_code == 2 and "drop --crs" in res.output
    res = run(cli, ["mosaic", str(a), "--crs", "EPSG:4326", "-o", str(tmp_path / "m")])
    assert res.exit_code == 2 and "give --res" in res.output
    res = run(cli, ["mosaic", str(a), str(a), "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "given twice" in res.output
    assert not (tmp_path / "m").exists()
    # first/last need no confidence; an existing output needs --overwrite
    assert run(cli, ["mosaic", str(a), str(no_conf), "--rule", "first", "-o", str(tmp_path / "m"), "-q"]).exit_code == 0
    res = run(cli, ["mosaic", str(a), str(b), "-o", str(tmp_path / "m")])
    assert res.exit_code == 5 and "already exists; pass --overwrite" in res.output
    with pytest.raises(OutputExistsError):
        mosaic_scenes([a, b], tmp_path / "m")
    assert run(cli, ["mosaic", str(a), str(b), "-o", str(tmp_path / "m"), "--overwrite", "-q"]).exit_code == 0
    with pytest.raises(ParameterError):
        mosaic_scenes([a], tmp_path / "x", rule="best")
    with pytest.raises(InputError, match="is not a folder"):
        mosaic_scenes([a / "landcover.tif"], tmp_path / "x")


def test_batch_predictions_in_two_zones_to_one_mosaic(tmp_path, linear_model):
    """The done-when path in small: scenes in two UTM zones -> geoseg predict (a batch) -> geoseg mosaic OUT."""
    from geoseg.testing import BANDS4, pattern_scene, write_raster

    scene, _ = pattern_scene(60, 60)
    bx, by = _b_origin()
    (tmp_path / "in").mkdir()
    a = write_raster(tmp_path / "in" / "A.tif", scene, crs="EPSG:32630", descriptions=BANDS4,
                     transform=Affine(10, 0, A_ORIGIN[0], 0, -10, A_ORIGIN[1]))
    b = write_raster(tmp_path / "in" / "B.tif", scene, crs="EPSG:32631", descriptions=BANDS4,
                     transform=Affine(10, 0, bx, 0, -10, by))
    run = CliRunner().invoke
    res = run(cli, ["predict", str(a), str(b), "-m", str(linear_model), "-o", str(tmp_path / "out"), "--confidence",
                    "--scheduler", "synchronous", "-q"])
    assert res.exit_code == 0, res.output
    res = run(cli, ["mosaic", str(tmp_path / "out"), "-o", str(tmp_path / "m"), "--rule", "first", "--scheduler",
                    "synchronous", "-q"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "m" / "landcover.tif") as src, \
            rasterio.open(tmp_path / "out" / "A" / "landcover.tif") as asrc:
        assert src.crs.to_epsg() == 32630 and (src.transform.c, src.transform.f) == A_ORIGIN
        np.testing.assert_array_equal(src.read(1)[:60, :60], asrc.read(1))  # first: A everywhere it observed
    item = json.loads((tmp_path / "m" / "item.json").read_text())
    hrefs = [(tmp_path / "m" / link["href"]).resolve() for link in item["links"] if link["rel"] == "derived_from"]
    assert hrefs == [(tmp_path / "out" / s / "item.json").resolve() for s in ("A", "B")]


def test_the_block_layout_does_not_change_the_mosaic(scenes, tmp_path):
    """At 2 m the grid has several blocks of 256 px: the same pixels as one block of 1024."""
    out = []
    for bs in (256, 1024):
        r = mosaic_scenes([str(s) for s in scenes], tmp_path / str(bs), res=2, block_size=bs, workers=2)
        with rasterio.open(r.landcover) as src, rasterio.open(r.confidence) as csrc:
            assert src.width > 256  # two block columns at 256
            out.append((src.read(1), csrc.read(1)))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_probabilities_come_from_the_scene_that_gave_the_class(tmp_path):
    def folder(name, col_off, cls, conf, probs):
        t = Affine(10, 0, A_ORIGIN[0] + 10 * col_off, 0, -10, A_ORIGIN[1])
        p = np.broadcast_to(np.array(probs, np.uint8)[:, None, None], (3, 8, 8))
        return prediction_folder(tmp_path / name, np.full((8, 8), cls), np.full((8, 8), conf), crs="EPSG:32630",
                                 transform=t, probabilities=p)

    a = folder("A", 0, 2, 70, (10, 20, 70))
    b = folder("B", 4, 1, 90, (5, 90, 5))
    r = mosaic_scenes([a, b], tmp_path / "m", scheduler="synchronous")
    with rasterio.open(r.probabilities) as src, rasterio.open(r.landcover) as lsrc:
        probs, lc = src.read(), lsrc.read(1)
        assert src.count == 3 and src.scales == (0.01,) * 3
    assert lc.shape == (8, 12) and (lc[:, :4] == 2).all() and (lc[:, 4:] == 1).all()
    assert (probs[:, :, :4] == np.array([10, 20, 70])[:, None, None]).all()
    assert (probs[:, :, 4:] == np.array([5, 90, 5])[:, None, None]).all()
    assert "probabilities" in json.loads((tmp_path / "m" / "item.json").read_text())["assets"]
