"""``geoseg model info``: the readable summary, ``--json`` (the whole card) and ``--stac`` (a STAC MLM item).

The MLM item is validated offline against the bundled schemas (tests/data/stac: the core Item, MLM v1.4.0
written from its spec, classification v2.0.0, file v2.1.0), and broken items show the MLM schema rejects
what the spec forbids.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.model.package import read_card, resolve


def _stac_schemas():
    if "stac_schemas" not in sys.modules:  # the helper of tests/delivery (imported there by its bare name)
        spec = importlib.util.spec_from_file_location(
            "stac_schemas", Path(__file__).parents[1] / "delivery" / "stac_schemas.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["stac_schemas"] = mod
    return sys.modules["stac_schemas"]


def _info(*args: str):
    return CliRunner().invoke(cli, ["model", "info", *args])


@pytest.fixture()
def untrained(tmp_path) -> Path:
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([{"value": 3, "name": "open water", "color": "#0000FF"},
                                   {"value": 1, "name": "land", "color": "#00FF00"}]))
    out = tmp_path / "pkg"
    r = CliRunner().invoke(cli, ["model", "init", "--arch", "PixelLinear", "--bands", "B4,B8", "--classes",
                                 str(classes), "--scale", "0.0001", "--tile-size", "128", "--overlap", "16",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_summary_of_the_default_model_is_readable(tmp_path):
    card = read_card(resolve("default"))
    r = _info("default")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert all(len(line) <= 110 for line in lines), max(lines, key=len)  # no huge JSON line any more
    assert not any(line.lstrip().startswith(("{", "[")) for line in lines)
    text = r.output
    assert f"model      {card.id} (version {card.version})" in text
    assert "input      sentinel-2 L1C DN; toa_reflectance = DN x 0.0001" in text  # units: the card's input
    assert "tiling     tile 512 px, overlap 64 px, gsd 10.5 m" in text
    assert "network    Unet / resnet18 (encoder_depth 4" in text and "output stride 16" in text
    assert "bands      9, normalised (DN - mean) / std:" in text
    for b, m, s in zip(card.bands, card.normalization.a, card.normalization.b):
        assert any(line.split()[1:] == [b, f"{m:.6g}", f"{s:.6g}"] for line in lines), b
    val = card.extra["metrics"]["validation"]
    assert f"mIoU {val['miou']:.3f}" in text and f"pixel accuracy {val['pixel_accuracy']:.3f}" in text
    for c in card.classes:  # each class with its validation IoU, recall and labelled pixels
        m = val["per_class"][c.name]
        row = [line for line in lines if line.split()[:3] == [str(c.value), c.color, c.name]]
        assert len(row) == 1, c.name
        assert row[0].split()[3:] == [f"{m['iou']:.3f}", f"{m['recall']:.3f}", f"{m['support']:,}"]
    tr = card.extra["training"]
    assert f"best epoch {tr['best_epoch']} of {tr['epochs_run']}" in text and "--json" in text
    assert f"created {tr['created']}" in text


def test_json_prints_the_whole_card(tmp_path):
    r = _info("default", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc == json.loads(read_card(resolve("default")).dumps())
    assert "confusion_matrix" in doc["metrics"]["validation"] and "config" in doc["training"]


def test_summary_of_an_untrained_package(untrained):
    r = _info(str(untrained))
    assert r.exit_code == 0, r.output
    assert "[UNTRAINED]" in r.output and "untrained; its class maps are meaningless" in r.output
    assert "input      undeclared (the card has no 'input': no radiometric check)" in r.output
    assert "validation no metrics in the card" in r.output and "\ntraining   " not in r.output
    assert "more       --json prints the whole card\n" in r.output
    assert "bands      2, normalised DN x scale + offset:" in r.output
    assert "tiling     tile 128 px, overlap 16 px" in r.output


def test_stac_writes_a_valid_mlm_item_of_the_default_model(tmp_path):
    import numpy as np

    from geoseg.delivery.stac import multihash_sha256
    from geoseg.model.package import load_model

    out = tmp_path / "stac" / "model.json"
    out.parent.mkdir()
    r = _info("default", "--stac", str(out))
    assert r.exit_code == 0, r.output
    item = json.loads(out.read_text())
    _stac_schemas().validate_item(item)
    card, net = load_model("default")
    p = item["properties"]
    assert p["mlm:name"] == card.id and p["mlm:architecture"] == "Unet"
    assert p["mlm:tasks"] == ["semantic-segmentation"] and p["mlm:framework"] == "PyTorch"
    assert p["mlm:total_parameters"] == sum(t.numel() for t in net.parameters())
    init = card.extra["training"].get("init_from_model")  # v3 was fine-tuned from v2 (itself from random weights)
    assert p["mlm:pretrained"] is bool(init) and p["mlm:pretrained_source"] == init
    assert p["datetime"] == card.extra["training"]["created"]
    (inp,) = p["mlm:input"]
    assert inp["bands"] == list(card.bands) and inp["input"]["shape"] == [-1, 9, 512, 512]
    np.testing.assert_array_equal([v["mean"] for v in inp["value_scaling"]], card.normalization.a)
    np.testing.assert_array_equal([v["stddev"] for v in inp["value_scaling"]], card.normalization.b)
    assert {v["type"] for v in inp["value_scaling"]} == {"z-score"}
    (res,) = p["mlm:output"]
    assert res["result"]["shape"] == [-1, 9, 512, 512] and res["result"]["dim_order"][1] == "class"
    assert [(c["value"], c["title"]) for c in res["classification:classes"]] == \
        sorted((c.value, c.name) for c in card.classes)
    weights = item["assets"]["weights"]
    assert "mlm:model" in weights["roles"] and weights["mlm:artifact_type"] == "safetensors"
    target = (out.parent / weights["href"]).resolve()
    assert target == (resolve("default") / "model.safetensors").resolve()
    assert weights["file:checksum"] == multihash_sha256(target) and weights["file:size"] == target.stat().st_size
    assert [b["name"] for b in weights["bands"]] == list(card.bands)
    assert (out.parent / item["assets"]["card"]["href"]).resolve().name == "geoseg-model.json"
    r = _info("default", "--stac", str(out))
    assert r.exit_code == 5 and "--overwrite" in r.output
    assert _info("default", "--stac", str(out), "--overwrite").exit_code == 0


def test_stac_of_a_scale_normalised_package_with_odd_class_names(untrained, tmp_path):
    out = tmp_path / "item.json"
    assert _info(str(untrained), "--stac", str(out)).exit_code == 0
    item = json.loads(out.read_text())
    _stac_schemas().validate_item(item)
    (inp,) = item["properties"]["mlm:input"]
    assert inp["value_scaling"] == [{"type": "scale", "value": pytest.approx(1e4)}] * 2  # DN * 1e-4 = DN / 1e4
    classes = item["properties"]["mlm:output"][0]["classification:classes"]
    assert [(c["value"], c["name"], c["title"]) for c in classes] == [(1, "land", "land"),
                                                                      (3, "open_water", "open water")]
    assert "values in index order are 3, 1" in item["properties"]["mlm:output"][0]["description"]


def test_the_mlm_schema_rejects_what_the_spec_forbids(tmp_path):
    ss = _stac_schemas()
    out = tmp_path / "item.json"
    assert _info("default", "--stac", str(out)).exit_code == 0
    item = json.loads(out.read_text())
    assert ss.stac_errors(item) == []

    def errors(mutate) -> str:
        bad = json.loads(json.dumps(item))
        mutate(bad)
        return "\n".join(e for e in ss.stac_errors(bad) if e.startswith("mlm-v1.4.0.json"))

    props = "properties"
    for key in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"):
        assert errors(lambda i, k=key: i[props].pop(k)), key  # required
    assert errors(lambda i: i[props].update({"mlm:foo": 1}))  # unknown mlm: field
    assert errors(lambda i: i[props].update({"mlm:tasks": ["land-cover"]}))
    assert errors(lambda i: i[props].update({"mlm:pretrained": False, "mlm:pretrained_source": "ImageNet"}))
    assert errors(lambda i: i[props]["mlm:input"][0]["value_scaling"][0].pop("stddev"))  # z-score needs it
    assert errors(lambda i: i[props]["mlm:input"][0]["input"].update({"shape": [0, 9, 512, 512]}))
    assert errors(lambda i: i[props]["mlm:input"][0].pop("input"))
    assert errors(lambda i: i[props]["mlm:output"][0].pop("result"))
    assert errors(lambda i: i["assets"]["weights"].pop("mlm:artifact_type"))  # required on the mlm:model asset
    assert errors(lambda i: i["assets"]["weights"].update({"roles": ["data"]}))  # no mlm:model asset
    assert errors(lambda i: i["assets"]["weights"].pop("bands"))  # input bands named but not defined
    assert errors(lambda i: i["assets"]["card"].update({"mlm:name": "x-model"}))  # Item properties only
