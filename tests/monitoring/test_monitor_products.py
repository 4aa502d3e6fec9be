"""``monitor`` over products: STAC Items of per-band COGs with their SCL mask; the masked pixels are unobserved."""

from __future__ import annotations

import rasterio
import yaml

from geoseg.io.clouds import read_cloud_mask
from geoseg.io.grid import Window
from geoseg.io.sources import read_stac_item
from geoseg.monitoring.api import run_monitor
from geoseg.testing_sources import write_reference, write_stac_item

SIZE = 120
BANDS = ("B2", "B3", "B4", "B8")  # the linear test model's


def _project(tmp, linear_model):
    import geopandas as gpd
    from shapely.geometry import box

    ref = write_reference(tmp / "reference.tif", size=SIZE)
    items = [write_stac_item(tmp / "scenes" / date, ref, level="L2A", bands_wanted=BANDS)
             for date in ("20210101", "20210301")]
    with rasterio.open(ref) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    aoi = box(left + 50, bottom + 50, right - 50, top - 50)  # 5 px inside the scene on every side
    gpd.GeoDataFrame({"id": ["aoi1"]}, geometry=[aoi], crs=crs).to_file(tmp / "aois.gpkg", engine="pyogrio")
    cfg = {"aois": "aois.gpkg", "scenes": {"glob": "scenes/*/item.json"}, "kind": "scene",
           "model": str(linear_model), "forest": "trees", "confirm_days": 90, "output": "out"}
    (tmp / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "monitor.yaml", items


def test_scl_masked_pixels_are_unobserved(tmp_path, linear_model):
    config, items = _project(tmp_path, linear_model)
    summary = run_monitor(config)
    assert summary["scenes_processed"] == 2
    source = read_stac_item(items[0], BANDS)
    assert source.cloud_mask is not None and source.cloud_mask.kind == "scl"
    masked = read_cloud_mask(source.cloud_mask, Window(5, 5, SIZE - 10, SIZE - 10))  # the AOI grid's window
    assert masked.any() and not masked.all()
    observations = sorted((tmp_path / "out" / "aoi1" / "observations").glob("*.tif"))
    assert len(observations) == 2
    for path in observations:
        with rasterio.open(path) as src:
            obs = src.read(1)
        assert obs.shape == masked.shape
        assert (obs[masked] == 255).all()  # not observed: never "no change"
        assert (obs[~masked] != 255).all()  # everything else inside the AOI is observed
