"""ONNX Runtime / OpenVINO / torch runtimes: exact known answers, agreement with torch eager, the graph cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import ParameterError
from geoseg.model import backends, export
from geoseg.model.runtime import configure_threads, get_predictor
from geoseg.testing import expected_probs, pattern_scene

EXPORTED = [pytest.param(r, marks=pytest.mark.skipif(importlib.util.find_spec(r) is None,
                                                      reason=f"{r} not installed"))
            for r in ("onnxruntime", "openvino")]
ALL = ["torch", *EXPORTED]


@pytest.fixture()
def linear_pkg(linear_model, tmp_path) -> Path:
    p = tmp_path / "linear"
    shutil.copytree(linear_model, p)
    return p


@pytest.fixture(scope="module")
def unet_pkg(unet_model, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("rt") / "unet"
    shutil.copytree(unet_model, p)
    return p


@pytest.mark.parametrize("runtime", ALL)
def test_linear_known_answer(linear_pkg, runtime):
    configure_threads(1)
    scene, _ = pattern_scene(64, 96)
    pred = get_predictor(str(linear_pkg), "cpu", None, runtime)
    assert pred.runtime == runtime and pred.precision == "f32"
    x = (scene.astype(np.float32) * 0.01)[None]
    got = pred(np.concatenate([x, x[:, :, ::-1, ::-1]]))
    want = expected_probs(scene)
    assert got.shape == (2, 3, 64, 96) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_allclose(got[1], want[:, ::-1, ::-1], atol=1e-6)


@pytest.mark.parametrize("runtime", EXPORTED)
@pytest.mark.parametrize("shape", [(1, 256, 256), (3, 128, 192)])  # dynamic batch, height and width
def test_unet_agrees_with_torch_eager(unet_pkg, runtime, shape):
    configure_threads(1)
    n, h, w = shape
    x = np.random.default_rng(1).standard_normal((n, 4, h, w)).astype(np.float32)
    ref = get_predictor(str(unet_pkg), "cpu", None, "torch")(x)
    got = get_predictor(str(unet_pkg), "cpu", None, runtime)(x)
    assert got.shape == ref.shape == (n, 4, h, w)
    assert np.abs(got - ref).max() < 1e-4
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9999


@pytest.mark.parametrize("runtime", EXPORTED)
def test_cache_reused_and_corrupt_rebuilt(linear_pkg, runtime):
    kind = "onnx" if runtime == "onnxruntime" else "openvino"
    get_file = export.onnx_file if kind == "onnx" else export.openvino_file
    first = get_file(linear_pkg)
    assert first.parent == linear_pkg / ".cache" and export.graph_key(linear_pkg)[:16] in first.name
    before, mtime = dict(export.EXPORTS), first.stat().st_mtime_ns
    assert get_file(linear_pkg) == first and before == export.EXPORTS and first.stat().st_mtime_ns == mtime
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # truncated: the sidecar no longer matches
    assert get_file(linear_pkg) == first and export.EXPORTS[kind] == before[kind] + 1
    assert first.read_bytes() == data or first.stat().st_size > len(data) // 2
    scene, _ = pattern_scene(32, 32)
    pred = backends.build_predictor(str(linear_pkg), runtime, "f32", 1)
    np.testing.assert_allclose(pred((scene.astype(np.float32) * 0.01)[None])[0], expected_probs(scene), atol=1e-6)


def test_cache_falls_back_to_user_dir(linear_pkg, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    single = tmp_path / "m.safetensors"  # a one-file package has no folder to cache in
    shutil.copy(linear_pkg / "model.safetensors", single)
    assert export.cache_dir(single) == tmp_path / "xdg" / "geoseg"
    os.chmod(linear_pkg, 0o555)
    try:
        if not os.access(linear_pkg, os.W_OK):  # root can write anyway
            assert export.cache_dir(linear_pkg) == tmp_path / "xdg" / "geoseg"
    finally:
        os.chmod(linear_pkg, 0o755)


def test_resolve_runtime_choices(monkeypatch):
    with pytest.raises(ParameterError, match="choose one of auto, torch, onnxruntime, openvino") as e:
        backends.resolve_runtime("tensorrt", "cpu")
    assert "\n" not in str(e.value) and "installed here: torch" in str(e.value)
    assert backends.resolve_runtime("torch", "cpu") == "torch"
    monkeypatch.setattr(backends, "installed_runtimes", lambda: ["torch"])
    assert backends.resolve_runtime("auto", "cpu") == "torch"
    with pytest.raises(ParameterError, match="openvino is not installed.*installed here: auto, torch"):
        backends.resolve_runtime("openvino", "cpu")
    monkeypatch.setattr(backends, "installed_runtimes", lambda: ["torch", "onnxruntime", "openvino"])
    monkeypatch.setattr(backends, "is_x86", lambda: True)
    assert backends.resolve_runtime("auto", "cpu") == "openvino"
    assert backends.resolve_runtime("auto", "cuda") == "torch"
    with pytest.raises(ParameterError, match="CPU only"):
        backends.resolve_runtime("onnxruntime", "cuda")
    monkeypatch.setattr(backends, "is_x86", lambda: False)
    assert backends.resolve_runtime("auto", "cpu") == "onnxruntime"


def test_bf16_needs_openvino_and_native_cpu(monkeypatch):
    with pytest.raises(ParameterError, match="needs --runtime openvino"):
        backends.check_precision("bf16", "onnxruntime")
    monkeypatch.setattr(backends, "cpu_has_bf16", lambda: False)
    with pytest.raises(ParameterError, match="avx512_bf16 or amx_bf16"):
        backends.check_precision("bf16", "openvino")
    with pytest.raises(ParameterError, match="choose one of f32, bf16"):
        backends.check_precision("fp8", "openvino")
    assert backends.check_precision("f32", "openvino") == "f32"


@pytest.mark.parametrize("runtime", EXPORTED)
def test_exported_path_does_not_import_torch(linear_pkg, runtime):
    export.openvino_file(linear_pkg) if runtime == "openvino" else export.onnx_file(linear_pkg)
    code = ("import sys, numpy as np; from geoseg.model.runtime import configure_threads, get_predictor; "
            f"configure_threads(1); p = get_predictor({str(linear_pkg)!r}, 'cpu', None, {runtime!r}); "
            "p(np.zeros((1, 4, 8, 8), np.float32)); print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
