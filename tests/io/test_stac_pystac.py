"""STAC Items and ItemCollections read with pystac: what pystac refuses is one geoseg line, never a traceback."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import InputError, NotAProductError
from geoseg.io.sources import open_source
from geoseg.predict.batch import expand_scenes


def _item(tmp_path, **fields):
    doc = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None, "links": [],
           "properties": {"datetime": "2016-09-27T02:55:52Z"},
           "assets": {"B02": {"href": "./B02.tif", "type": "image/tiff"}}, **fields}
    p = tmp_path / "item.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("fields, message", [
    ({"properties": {"datetime": "not a date"}}, r"not a valid STAC Item \(.*\); fix it or pass another Item JSON"),
    ({"links": [{"href": "x"}]}, r"not a valid STAC Item \(missing field 'rel'\)"),
])
def test_what_pystac_refuses_is_one_not_a_product_line(tmp_path, fields, message):
    with pytest.raises(NotAProductError, match=message) as err:
        open_source(_item(tmp_path, **fields))
    assert "\n" not in str(err.value)


def test_a_malformed_roles_field_does_not_crash(tmp_path):
    p = _item(tmp_path, assets={"B02": {"href": "./B02.tif", "type": "image/tiff", "roles": 5}})
    with pytest.raises(InputError, match=r"the asset of band B2 \(\./B02\.tif\) does not exist"):
        open_source(p)


def test_cli_names_a_bad_item_in_one_line(tmp_path, linear_model):
    p = _item(tmp_path, properties={"datetime": "not a date"})
    res = CliRunner().invoke(cli, ["predict", str(p), "-m", str(linear_model), "-o", str(tmp_path / "out")])
    assert res.exit_code == NotAProductError.exit_code and "not a valid STAC Item" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out" / "landcover.tif").exists()


def test_an_item_collection_feature_pystac_refuses_is_named(tmp_path):
    good = json.loads(_item(tmp_path).read_text())
    coll = tmp_path / "search.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": [good, {**good, "id": "y", "links": [{}]}]}))
    with pytest.raises(InputError, match=r"feature #2 is not a STAC Item; fix the ItemCollection"):
        expand_scenes([str(coll)], tmp_path / "stage")
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": [good]}))
    (scene,) = expand_scenes([str(coll)], tmp_path / "stage")
    staged = json.loads(Path(scene.path).read_text())
    assert staged["assets"]["B02"]["href"] == str((tmp_path / "B02.tif").resolve())
    assert staged["properties"]["datetime"].startswith("2016-09-27T02:55:52")
