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
import torch

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


def _flags(monkeypatch, *flags: str) -> None:
    """Fake /proc/cpuinfo's flags (what cpu_has_bf16 reads)."""
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset(flags))


def test_bf16_needs_a_bf16_runtime_and_native_cpu(monkeypatch):
    with pytest.raises(ParameterError, match="needs --runtime openvino or torch"):
        backends.check_precision("bf16", "onnxruntime")
    _flags(monkeypatch, "avx2", "fma")
    assert not backends.cpu_has_bf16()
    for runtime in ("openvino", "torch"):
        with pytest.raises(ParameterError, match="avx512_bf16 or amx_bf16") as e:
            backends.check_precision("bf16", runtime)
        assert "\n" not in str(e.value) and "--precision f32" in str(e.value)
    with pytest.raises(ParameterError, match="choose one of auto, f32, bf16"):
        backends.check_precision("fp8", "openvino")
    assert backends.check_precision("f32", "openvino") == "f32"
    _flags(monkeypatch, "avx512f", "avx512_bf16")
    assert backends.check_precision("bf16", "openvino") == "bf16" == backends.check_precision("BF16", "torch")
    with pytest.raises(ParameterError, match="for the CPU; on CUDA torch runs mixed precision"):
        backends.check_precision("bf16", "torch", "cuda")


@pytest.mark.parametrize("flags, bf16", [((), False), (("avx2", "avx512_vnni"), False),
                                         (("avx512_bf16",), True), (("amx_bf16", "amx_tile"), True)])
def test_precision_auto_follows_the_cpu_flags(monkeypatch, flags, bf16):
    _flags(monkeypatch, *flags)
    want = "bf16" if bf16 else "f32"
    for runtime in ("openvino", "torch"):
        assert backends.check_precision("auto", runtime) == (want if backends.AUTO_BF16[runtime] else "f32")
    assert backends.check_precision("auto", "onnxruntime") == "f32"  # no bf16 path
    assert backends.check_precision("auto", "torch", "cuda") == "f32"  # CUDA: AMP decides
    monkeypatch.setitem(backends.AUTO_BF16, "openvino", False)  # a runtime measured no faster stays f32
    assert backends.check_precision("auto", "openvino") == "f32"


def test_torch_amp_precision_is_its_amp():
    """RuntimeChoice records torch on CUDA as amp-bf16 / amp-f16: the tasks pass it back to get_predictor."""
    assert backends.check_precision("amp-bf16", "torch", "cuda") == "f32" == backends.check_precision("amp-f16",
                                                                                                     "torch")
    with pytest.raises(ParameterError, match="unknown precision"):
        backends.check_precision("amp-bf16", "openvino")


@pytest.mark.parametrize("runtime", ["torch", pytest.param("openvino", marks=EXPORTED[1].marks)])
def test_choice_records_the_precision_settings(monkeypatch, runtime):
    from geoseg.model.runtime import choose_runtime

    _flags(monkeypatch, "avx512_bf16")
    auto = choose_runtime(runtime, "cpu", "auto")
    assert auto.precision == "bf16" and auto.requested_precision == "auto" and auto.cpu_bf16
    settings = auto.to_json()["settings"]
    if runtime == "openvino":
        assert settings["INFERENCE_PRECISION_HINT"] == "bf16" and settings["openvino_default"] in ("bf16", "f32")
    else:
        assert settings == {"channels_last": True, "autocast": "bf16"}
    _flags(monkeypatch)
    plain = choose_runtime(runtime, "cpu", "auto")
    assert plain.precision == "f32" and not plain.cpu_bf16
    assert plain.to_json()["settings"].get("INFERENCE_PRECISION_HINT", "f32") == "f32"


def test_torch_bf16_autocast_agrees_with_f32_on_the_known_answer(linear_pkg):
    """torch's CPU bf16 path (autocast, channels_last) runs anywhere (emulated without native BF16): the
    PixelLinear classes survive bf16 rounding except where two classes nearly tie."""
    from geoseg.model.torch_backend import Predictor, torch_predictor

    configure_threads(1)
    scene, _ = pattern_scene(64, 96)
    x = (scene.astype(np.float32) * 0.01)[None]
    want = expected_probs(scene)
    bf16 = torch_predictor(str(linear_pkg), "cpu", None, precision="bf16")
    assert bf16.precision == "bf16" and bf16.channels_last
    got = bf16(x)[0]
    assert got.dtype == np.float32 and np.abs(got - want).max() < 0.05
    assert np.allclose(got.sum(0), 1, atol=1e-5)  # softmax in f32
    margin = np.sort(want, 0)[-1] - np.sort(want, 0)[-2]
    assert (got.argmax(0) == want.argmax(0))[margin > 0.05].all()
    with pytest.raises(ParameterError, match="precision 'bf16' on cuda"):
        Predictor(bf16.card, bf16.net, torch.device("cuda"), precision="bf16")


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or not backends.cpu_has_bf16(),
                    reason="needs OpenVINO and a CPU with native BF16")
def test_openvino_bf16_runs_bf16_and_agrees_on_the_known_answer(linear_pkg):
    configure_threads(1)
    scene, _ = pattern_scene(64, 96)
    want = expected_probs(scene)
    f32 = get_predictor(str(linear_pkg), "cpu", None, "openvino", "f32")
    bf16 = get_predictor(str(linear_pkg), "cpu", None, "openvino", "bf16")
    assert (f32.inference_precision, bf16.inference_precision) == ("f32", "bf16")  # asked back of OpenVINO
    got = bf16((scene.astype(np.float32) * 0.01)[None])[0]
    assert np.abs(got - want).max() < 0.05
    margin = np.sort(want, 0)[-1] - np.sort(want, 0)[-2]
    assert (got.argmax(0) == want.argmax(0))[margin > 0.05].all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_predictor_runs_amp_and_agrees_with_the_cpu(unet_pkg):
    from geoseg.model.runtime import choose_runtime

    choice = choose_runtime("auto", "cuda")
    assert choice.runtime == "torch" and choice.device.startswith("cuda") and choice.precision.startswith("amp-")
    x = np.random.default_rng(2).standard_normal((2, 4, 128, 128)).astype(np.float32)
    gpu = get_predictor(str(unet_pkg), choice.device, None, "torch", choice.precision)  # what the tasks pass
    assert gpu.precision == choice.precision
    ref = get_predictor(str(unet_pkg), "cpu", None, "torch")(x)
    assert (gpu(x).argmax(1) == ref.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("runtime", EXPORTED)
def test_exported_path_does_not_import_torch(linear_pkg, runtime):
    export.openvino_file(linear_pkg) if runtime == "openvino" else export.onnx_file(linear_pkg)
    code = ("import sys, numpy as np; from geoseg.model.runtime import configure_threads, get_predictor; "
            f"configure_threads(1); p = get_predictor({str(linear_pkg)!r}, 'cpu', None, {runtime!r}); "
            "p(np.zeros((1, 4, 8, 8), np.float32)); print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
