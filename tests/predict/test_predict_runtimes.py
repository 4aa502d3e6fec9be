"""``predict_scene`` / ``geoseg predict`` on every installed runtime: known answers, agreement with torch
eager on the real sample, determinism, the option errors, run.json and ``--profile``."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg import predict_scene
from geoseg.cli import cli
from geoseg.model import backends, export
from geoseg.model.runtime import choose_runtime, resolve_runtime
from geoseg.predict.profile import STAGES
from geoseg.testing import BANDS4, expected_probs, pattern_scene, write_raster

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tiles" / "hongkong_20160927" / "image.tif"
EXPORTED = [pytest.param(r, marks=pytest.mark.skipif(importlib.util.find_spec(r) is None,
                                                      reason=f"{r} not installed"))
            for r in ("onnxruntime", "openvino")]
ALL = ["torch", *EXPORTED]


def _read(path, band=None):
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


def _record(result) -> dict:
    return json.loads(Path(result.run_record).read_text())


@pytest.fixture()
def linear_pkg(linear_model, tmp_path) -> Path:
    """A private copy (its own graph cache)."""
    p = tmp_path / "linear"
    shutil.copytree(linear_model, p, ignore=shutil.ignore_patterns(".cache"))  # without graphs exported earlier
    return p


@pytest.fixture(scope="module")
def sample_crop(tmp_path_factory) -> Path:
    """A 300 x 360 crop of the shipped Hong Kong sample (9-band S2 L1C DN), georeferenced."""
    if not SAMPLE.exists():
        pytest.skip("the shipped sample tiles/hongkong_20160927 is absent")
    out = tmp_path_factory.mktemp("sample") / "crop.tif"
    with rasterio.open(SAMPLE) as src:
        win = rasterio.windows.Window(100, 200, 360, 300)
        profile = src.profile | {"width": 360, "height": 300, "transform": src.window_transform(win)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.descriptions = src.descriptions
            dst.update_tags(**src.tags())
    return out


@pytest.mark.parametrize("tta", ["none", "d4"])
@pytest.mark.parametrize("runtime", ALL)
def test_stitching_reproduces_the_known_function_on_every_runtime(tmp_path, linear_pkg, runtime, tta):
    """PixelLinear: tiled, blended, (augmented and mapped back) == the per-pixel known answer."""
    scene, cls = pattern_scene(203, 331)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    r = predict_scene(src, linear_pkg, tmp_path / "out", block_size=256, probabilities=True, workers=2,
                      runtime=runtime, tta=tta)
    assert r.tiles > 20
    np.testing.assert_array_equal(_read(r.landcover, 1), cls)
    prob = _read(r.probabilities).astype(int)
    assert np.abs(prob - np.rint(expected_probs(scene) * 100)).max() <= 1
    rec = _record(r)["runtime"]
    assert rec["runtime"] == runtime and rec["precision"] == "f32" and rec["device"] == "cpu"


SAMPLE_KW = dict(tile_size=256, overlap=64, block_size=256, probabilities=True, progress=False)


@pytest.fixture(scope="module")
def sample_torch(sample_crop, tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """torch eager's (class map, probabilities) of the sample crop with the shipped default model."""
    ref = predict_scene(sample_crop, "default", tmp_path_factory.mktemp("torch"), runtime="torch", **SAMPLE_KW)
    return _read(ref.landcover, 1), _read(ref.probabilities)


@pytest.mark.parametrize("runtime", EXPORTED)
def test_sample_class_map_matches_torch_eager(tmp_path, sample_crop, sample_torch, runtime):
    """The shipped default model on real data: f32 runtimes reproduce torch eager (>= 99.99 % of pixels)."""
    got = predict_scene(sample_crop, "default", tmp_path / runtime, runtime=runtime, **SAMPLE_KW)
    a, b = sample_torch[0], _read(got.landcover, 1)
    assert len(np.unique(a)) >= 3  # a real map, not a constant
    assert (a == b).mean() >= 0.9999, (a != b).sum()
    assert np.abs(sample_torch[1].astype(int) - _read(got.probabilities).astype(int)).max() <= 1


BF16 = [pytest.param("openvino", marks=pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                                          reason="openvino not installed")), "torch"]


@pytest.mark.skipif(not backends.cpu_has_bf16(), reason="needs a CPU with native BF16")
@pytest.mark.parametrize("runtime", BF16)
def test_bf16_is_recorded_and_close_to_f32(tmp_path, sample_crop, runtime):
    """Real data at bf16 against f32 (the measured agreement is in docs/runtimes.md)."""
    kw = dict(tile_size=256, overlap=64, progress=False, runtime=runtime)
    f32 = predict_scene(sample_crop, "default", tmp_path / "f32", **kw)
    bf16 = predict_scene(sample_crop, "default", tmp_path / "bf16", precision="bf16", **kw)
    rec = _record(bf16)["runtime"]
    assert rec["precision"] == "bf16" and rec["requested_precision"] == "bf16" and rec["cpu_bf16"]
    assert rec["settings"] == ({"INFERENCE_PRECISION_HINT": "bf16", "openvino_default": "bf16"}
                               if runtime == "openvino" else {"channels_last": True, "autocast": "bf16"})
    assert _record(f32)["runtime"]["settings"].get("INFERENCE_PRECISION_HINT", "f32") == "f32"
    assert (_read(f32.landcover, 1) == _read(bf16.landcover, 1)).mean() >= 0.99


@pytest.mark.parametrize("runtime", ALL)
def test_precision_auto_is_decided_by_the_cpu_and_recorded(tmp_path, linear_pkg, runtime, monkeypatch):
    """Without native BF16 ``auto`` is f32 everywhere (known answer exact); with it, bf16 where measured."""
    scene, cls = pattern_scene(70, 90)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2"}))
    r = predict_scene(src, linear_pkg, tmp_path / "o", runtime=runtime, precision="auto", progress=False)
    rec = _record(r)["runtime"]
    assert (rec["precision"], rec["requested_precision"], rec["cpu_bf16"]) == ("f32", "auto", False)
    np.testing.assert_array_equal(_read(r.landcover, 1), cls)
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    want = "bf16" if backends.AUTO_BF16.get(runtime) else "f32"
    assert choose_runtime(runtime, "cpu", "auto").precision == want


@pytest.mark.parametrize("runtime", ALL)
def test_deterministic_across_workers_and_blocks(tmp_path, unet_model, runtime):
    scene, _ = pattern_scene(300, 333)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    outs = []
    for i, kw in enumerate([dict(workers=1, block_size=256), dict(workers=2, block_size=512),
                            dict(workers=2, block_size=1024, scheduler="synchronous")]):
        r = predict_scene(src, unet_model, tmp_path / f"o{i}", probabilities=True, tile_size=128, overlap=64,
                          runtime=runtime, **kw)
        outs.append((_read(r.landcover), _read(r.probabilities)))
    assert len(np.unique(outs[0][0])) > 1
    for lc, pr in outs[1:]:
        assert np.array_equal(lc, outs[0][0]) and np.array_equal(pr, outs[0][1])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", EXPORTED)
def test_process_workers_only_load_the_graph_and_agree_with_threads(tmp_path, linear_pkg, runtime):
    """Worker processes (each with its own session) give the threads' bytes and never rebuild the graph."""
    scene, cls = pattern_scene(260, 300)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    a = predict_scene(src, linear_pkg, tmp_path / "t", runtime=runtime, probabilities=True, block_size=256)
    graph = export.cache_dir(linear_pkg) / _record(a)["runtime"]["graph"]
    mtime = graph.stat().st_mtime_ns
    b = predict_scene(src, linear_pkg, tmp_path / "p", runtime=runtime, probabilities=True, block_size=256,
                      scheduler="processes", workers=2)
    assert graph.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(_read(b.landcover, 1), cls)
    assert np.array_equal(_read(a.probabilities), _read(b.probabilities))


@pytest.mark.parametrize("runtime", EXPORTED)
def test_graph_exported_once_before_the_tasks(tmp_path, linear_pkg, runtime, monkeypatch):
    kind = "onnx" if runtime == "onnxruntime" else "openvino"
    scene, _ = pattern_scene(100, 120)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    import geoseg.predict.graph as graph_module

    run = graph_module.run
    seen = []

    def checked_run(spec, *args, **kwargs):  # the graph file exists before any task runs
        seen.append(sorted(p.name for p in export.cache_dir(linear_pkg).glob(f"{kind}*")))
        return run(spec, *args, **kwargs)

    monkeypatch.setattr(graph_module, "run", checked_run)
    before = export.EXPORTS[kind]
    r = predict_scene(src, linear_pkg, tmp_path / "a", runtime=runtime)
    assert export.EXPORTS[kind] == before + 1
    assert _record(r)["runtime"]["graph"] in seen[0]
    predict_scene(src, linear_pkg, tmp_path / "b", runtime=runtime)
    assert export.EXPORTS[kind] == before + 1  # cached: not exported again


def test_run_json_records_runtime_and_auto_resolves_as_documented(tmp_path, linear_pkg):
    scene, _ = pattern_scene(70, 80)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    rec = _record(predict_scene(src, linear_pkg, tmp_path / "o"))  # the default: auto
    run = rec["runtime"]
    assert rec["options"]["runtime"] == run["requested"] == "auto"
    assert run["runtime"] == resolve_runtime("auto", "cpu")
    assert run["precision"] == "f32" and run["version"]
    if run["runtime"] == "torch":
        assert run["graph"] is None
    else:
        assert (export.cache_dir(linear_pkg) / run["graph"]).exists()
        assert export.graph_key(linear_pkg)[:16] in run["graph"]
    assert "profile" not in rec


def test_profile_in_run_json_and_on_stderr(tmp_path, linear_pkg):
    scene, _ = pattern_scene(150, 170)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    r = predict_scene(src, linear_pkg, tmp_path / "o", profile=True, block_size=256, confidence=True)
    prof = _record(r)["profile"]
    assert r.extra["profile"] == prof and list(prof["stages_s"]) == list(STAGES)
    for stage in ("read", "normalise", "forward", "blend", "write", "cog"):
        assert prof["stages_s"][stage] > 0, stage
    assert prof["tasks"] > 4 and prof["graph_wall_s"] > 0
    res = CliRunner().invoke(cli, ["predict", str(src), "-m", str(linear_pkg), "-o", str(tmp_path / "c"),
                                   "--profile", "--runtime", "torch", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "profile:" in res.stderr and "forward" in res.stderr
    assert json.loads((tmp_path / "c" / "run.json").read_text())["runtime"]["runtime"] == "torch"


@pytest.mark.parametrize("args, message", [
    (["--runtime", "tensorrt"], "unknown runtime 'tensorrt'; choose one of auto, torch, onnxruntime, openvino"),
    (["--precision", "fp8"], "unknown precision 'fp8'; choose one of auto, f32, bf16"),
    (["--runtime", "onnxruntime", "--precision", "bf16"], "needs --runtime openvino or torch"),
    (["--runtime", "onnxruntime", "--device", "cuda"], "runs on the CPU only"),
])
def test_bad_runtime_options_are_one_line_errors_before_any_work(tmp_path, linear_pkg, args, message):
    if "onnxruntime" in args and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    scene, _ = pattern_scene(40, 40)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    res = CliRunner().invoke(cli, ["predict", str(src), "-m", str(linear_pkg), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code != 0
    err = res.stderr.strip()
    assert message in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_uninstalled_runtime_and_bf16_without_native_support(tmp_path, linear_pkg, monkeypatch):
    scene, _ = pattern_scene(40, 40)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    base = ["predict", str(src), "-m", str(linear_pkg), "-o", str(tmp_path / "o")]
    monkeypatch.setattr(backends, "installed_runtimes", lambda: ["torch"])
    res = CliRunner().invoke(cli, [*base, "--runtime", "openvino"])
    assert res.exit_code != 0 and "openvino is not installed" in res.stderr
    assert "installed here: auto, torch" in res.stderr and "\n" not in res.stderr.strip()
    monkeypatch.setattr(backends, "installed_runtimes", lambda: ["torch", "openvino"])
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    for runtime in ("openvino", "torch"):
        res = CliRunner().invoke(cli, [*base, "--runtime", runtime, "--precision", "bf16"])
        assert res.exit_code != 0 and "avx512_bf16 or amx_bf16" in res.stderr and "--precision f32" in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", EXPORTED)
def test_exported_runtime_predicts_without_importing_torch(tmp_path, linear_pkg, runtime):
    """With the graph cached, a whole prediction on ONNX Runtime / OpenVINO never imports torch."""
    export.graph_file(linear_pkg, runtime)
    scene, cls = pattern_scene(90, 100)
    src = write_raster(tmp_path / "s.tif", scene, descriptions=BANDS4)
    code = ("import sys; from geoseg import predict_scene; "
            f"predict_scene({str(src)!r}, {str(linear_pkg)!r}, {str(tmp_path / 'o')!r}, runtime={runtime!r}, "
            "progress=False); print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "False"
    np.testing.assert_array_equal(_read(tmp_path / "o" / "landcover.tif", 1), cls)
