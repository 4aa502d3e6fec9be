"""Training precision (fp32 / bf16 autocast / CUDA AMP), channels_last, and the background batch loader.

Tiny synthetic data built in code (EPSG:32633, 10 m pixels).  The bf16 autocast path is exercised on every
CPU (PyTorch emulates bf16 where the CPU lacks it; the numbers are bf16's either way, only slower): the
native-BF16 check is patched for those tests.  The test of ``precision: auto`` picking bf16 by itself runs
only on a CPU with native BF16.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import ParameterError
from geoseg.model.backends import cpu_has_bf16
from geoseg.testing import write_raster
from geoseg.training.config import TrainConfig
from geoseg.training.precision import Stepper, StepPrecision, resolve_precision

BANDS = ["B2", "B3", "B4"]
CLASSES = [{"value": 1, "name": "water", "color": "#419BDF"}, {"value": 2, "name": "trees", "color": "#397D49"},
           {"value": 5, "name": "built", "color": "#C4281B"}]
TINY_UNET = {"arch": "Unet", "encoder": "resnet18",
             "arch_params": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}
CPU = torch.device("cpu")


def _scene(seed: int, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """3-band uint16 image whose class (values 1, 2, 5) is the band that is 500 DN brighter, plus noise."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:h, 0:w]
    k = ((r // 8 + c // 11 + seed) % 3).astype(np.int64)
    img = rng.integers(800, 1100, size=(3, h, w))
    for b in range(3):
        img[b] += np.where(k == b, 500, 0)
    return img.astype(np.uint16), np.array([1, 2, 5], dtype=np.uint8)[k]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("precision-set")
    for i, name in enumerate("abc"):
        (root / name).mkdir()
        img, lab = _scene(i)
        write_raster(root / name / "image.tif", img, nodata=0, descriptions=BANDS)
        write_raster(root / name / "label.tif", lab, nodata=255)
    return root


def _cfg(dataset: Path, out: Path, **kw) -> TrainConfig:
    base = {"images": [str(dataset / "*" / "image.tif")], "labels": "{dir}/label.tif", "classes": CLASSES,
            "val_scenes": ["*/c/*"], "window": 32, "val_window": 64, "samples_per_epoch": 16, "batch_size": 8,
            "epochs": 3, "lr": 3e-3, "schedule": "constant", "seed": 5, "device": "cpu", "threads": 1,
            "output": str(out / "model"), **TINY_UNET}
    base.update(kw)
    return TrainConfig(**base).validate()


def _native_bf16(monkeypatch, native: bool) -> None:
    """Make the run-time BF16 check (the one helper, geoseg.model.backends.cpu_has_bf16) answer ``native``."""
    monkeypatch.setattr("geoseg.training.precision.cpu_has_bf16", lambda: native)


# -- the decision -------------------------------------------------------------------------------------
def test_precision_decision_on_cpu_and_cuda():
    yes, no = (lambda: True), (lambda: False)
    assert resolve_precision("auto", CPU, cpu_bf16=no) == StepPrecision("f32", "cpu", None)
    assert resolve_precision("auto", CPU, cpu_bf16=yes) == StepPrecision("bf16", "cpu", torch.bfloat16)
    assert resolve_precision("f32", CPU, cpu_bf16=yes).dtype is None
    assert resolve_precision("BF16", CPU, cpu_bf16=yes).name == "bf16"
    with pytest.raises(ParameterError) as e:
        resolve_precision("bf16", CPU, cpu_bf16=no)
    msg = str(e.value)
    assert "\n" not in msg and "avx512_bf16" in msg and "amx_bf16" in msg and "precision: auto or f32" in msg
    with pytest.raises(ParameterError, match="unknown"):
        resolve_precision("fp16", CPU)
    # CUDA keeps AMP: bf16 where the GPU has it, else fp16 with a gradient scaler (no GPU needed to decide)
    gpu = torch.device("cuda")
    amp = resolve_precision("auto", gpu, cuda_bf16=yes)
    assert (amp.name, amp.dtype, amp.needs_scaler) == ("amp-bf16", torch.bfloat16, False)
    amp = resolve_precision("auto", gpu, cuda_bf16=no)
    assert (amp.name, amp.dtype, amp.needs_scaler) == ("amp-f16", torch.float16, True)
    assert resolve_precision("f32", gpu, cuda_bf16=yes).dtype is None
    with pytest.raises(ParameterError, match="bf16"):
        resolve_precision("bf16", gpu, cuda_bf16=no)
    # memory format
    assert resolve_precision("f32", CPU).memory_format == torch.channels_last
    assert resolve_precision("f32", CPU, channels_last=False).memory_format == torch.contiguous_format
    # the default check is the run-time one of /proc/cpuinfo
    assert resolve_precision("auto", CPU).name == ("bf16" if cpu_has_bf16() else "f32")


def test_memory_format_decision():
    from geoseg.training.precision import cpu_has_avx512, resolve_memory_format

    yes, no = (lambda: True), (lambda: False)
    assert resolve_memory_format("auto", CPU, avx512=yes) is True
    assert resolve_memory_format("auto", CPU, avx512=no) is False  # measured slower on an AVX2-only CPU
    assert resolve_memory_format("auto", torch.device("cuda"), avx512=no) is True
    assert resolve_memory_format("channels_last", CPU, avx512=no) is True
    assert resolve_memory_format("contiguous", CPU, avx512=yes) is False
    assert resolve_memory_format("auto", CPU) is cpu_has_avx512()
    with pytest.raises(ParameterError, match="memory_format 'nhwc' is unknown"):
        resolve_memory_format("nhwc", CPU)
    with pytest.raises(ParameterError, match="memory_format"):
        TrainConfig(images=["x"], classes=CLASSES, memory_format="nhwc").validate()


def test_precision_option_errors(dataset, tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from geoseg.cli import cli
    from geoseg.training.loop import train

    with pytest.raises(ParameterError, match="precision 'fp16' is unknown"):
        _cfg(dataset, tmp_path, precision="fp16")
    _native_bf16(monkeypatch, False)
    lines: list[str] = []
    with pytest.raises(ParameterError, match="avx512_bf16"):
        train(_cfg(dataset, tmp_path, precision="bf16"), log=lines.append)
    assert not lines and not (tmp_path / "model").exists()  # refused before reading any data
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"images": [str(dataset / "*" / "image.tif")], "labels": "{dir}/label.tif",
                                    "classes": CLASSES, "val_scenes": ["*/c/*"], "arch": "PixelMLP",
                                    "window": 16, "val_window": 32, "samples_per_epoch": 8, "epochs": 1,
                                    "device": "cpu", "threads": 1, "output": "out/model"}))
    r = CliRunner().invoke(cli, ["train", str(conf), "--precision", "bf16"])
    assert r.exit_code == 2, r.output
    err = r.output.strip().splitlines()
    assert len(err) == 1 and "avx512_bf16" in err[0] and "amx_bf16" in err[0], r.output
    r = CliRunner().invoke(cli, ["train", str(conf), "--precision", "half"])
    assert r.exit_code == 2 and "auto, f32, bf16" in r.output


# -- the bf16 autocast step ---------------------------------------------------------------------------
def test_bf16_step_autocasts_the_forward_and_keeps_fp32_weights_and_loss():
    from geoseg.model.registry import build_model
    from geoseg.training.losses import CombinedLoss

    torch.manual_seed(0)
    net = build_model("Unet", "resnet18", 3, 3, **TINY_UNET["arch_params"]).to(memory_format=torch.channels_last)
    seen: list[torch.dtype] = []
    net.encoder.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    criterion = CombinedLoss({"ce": 1.0, "dice": 0.5}, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses_in: list[torch.dtype] = []
    criterion.register_forward_pre_hook(lambda m, args: losses_in.append(args[0].dtype))
    stepper = Stepper(StepPrecision("bf16", "cpu", torch.bfloat16), net, criterion, opt)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 3, (2, 32, 32))
    before = net.encoder.conv1.weight.detach().clone()
    loss = stepper.loss(x, t)
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and losses_in == [torch.float32]
    stepper.step(x, t)
    w = net.encoder.conv1.weight
    assert w.dtype == torch.float32 and not torch.equal(w.detach(), before)  # fp32 master weights, updated
    assert all(v.dtype == torch.float32 for st in opt.state.values() for v in st.values() if v.dim())
    seen.clear()
    Stepper(StepPrecision("f32", "cpu", None), net, criterion, opt).loss(x, t)
    assert seen == [torch.float32]


def _losses(res) -> list[float]:
    return [h["train_loss"] for h in res.history]


def test_bf16_training_follows_the_fp32_loss_trajectory(dataset, tmp_path, monkeypatch):
    from geoseg.model.package import read_card
    from geoseg.training.loop import train

    _native_bf16(monkeypatch, True)  # emulated where the CPU lacks BF16: slower, the same bf16 numbers
    f32 = train(_cfg(dataset, tmp_path / "f32", precision="f32", epochs=4), log=None)
    bf16 = train(_cfg(dataset, tmp_path / "bf16", precision="auto", epochs=4), log=None)
    a, b = np.array(_losses(f32)), np.array(_losses(bf16))
    assert a[-1] < 0.7 * a[0] and b[-1] < 0.7 * b[0], (a, b)  # both learn: the comparison is not trivial
    # same trajectory within bf16 rounding (measured: < 1 % apart; the validation mIoU of a network this
    # briefly trained swings with its BatchNorm running statistics and is not compared)
    np.testing.assert_allclose(b, a, rtol=0.03)
    assert read_card(bf16.output).extra["training"]["precision"] == "bf16"
    assert read_card(f32.output).extra["training"]["precision"] == "f32"
    assert {h["precision"] for h in bf16.history} == {"bf16"}
    # master weights stay fp32: the package (half: false) holds fp32 tensors
    from safetensors import safe_open

    with safe_open(str(Path(bf16.output) / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()  # noqa: SIM118
                if f.get_tensor(k).is_floating_point()} == {torch.float32}


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native BF16 (avx512_bf16/amx_bf16)")
def test_auto_picks_native_bf16_and_matches_fp32(dataset, tmp_path):
    from geoseg.training.loop import train

    f32 = train(_cfg(dataset, tmp_path / "f32", precision="f32", epochs=4), log=None)
    lines: list[str] = []
    auto = train(_cfg(dataset, tmp_path / "auto", epochs=4), log=lines.append)
    assert any(line.startswith("steps in bf16") for line in lines)
    np.testing.assert_allclose(_losses(auto), _losses(f32), rtol=0.03)


# -- channels_last ------------------------------------------------------------------------------------
def test_channels_last_gives_the_contiguous_numbers():
    from geoseg.model.registry import build_model

    torch.manual_seed(1)
    a = build_model("Unet", "resnet18", 3, 3, **TINY_UNET["arch_params"])
    b = build_model("Unet", "resnet18", 3, 3, **TINY_UNET["arch_params"])
    b.load_state_dict(a.state_dict())
    b = b.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    t = torch.randint(0, 3, (2, 64, 64))
    ya = a(x)
    yb = b(x.contiguous(memory_format=torch.channels_last))
    assert yb.is_contiguous(memory_format=torch.channels_last) and not ya.is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)  # float rounding of other kernels; logits ~1
    torch.nn.functional.cross_entropy(ya, t).backward()
    torch.nn.functional.cross_entropy(yb, t).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_training_matches_contiguous(dataset, tmp_path):
    from geoseg.model.package import read_card
    from geoseg.training.loop import train

    cl = train(_cfg(dataset, tmp_path / "cl", precision="f32", epochs=2, memory_format="channels_last"), log=None)
    nc = train(_cfg(dataset, tmp_path / "nc", precision="f32", epochs=2, memory_format="contiguous"), log=None)
    np.testing.assert_allclose(_losses(cl), _losses(nc), rtol=1e-4)
    assert read_card(cl.output).extra["training"]["memory_format"] == "channels_last"
    assert read_card(nc.output).extra["training"]["memory_format"] == "contiguous"
    log = json.loads((Path(cl.work_dir) / "log.json").read_text())
    assert all(r["train_seconds"] <= r["seconds"] for r in log)


# -- the background loader ----------------------------------------------------------------------------
def test_prefetched_batches_equal_the_plain_loop_and_come_from_a_worker_thread(dataset, tmp_path):
    from geoseg.model.card import parse_classes
    from geoseg.training.batches import batch_windows, make_batch, prefetch
    from geoseg.training.data import Pair, WindowSampler, band_stats, load_scene

    cfg = _cfg(dataset, tmp_path, brightness=30.0, contrast=0.1)
    scenes = [load_scene(Pair(str(dataset / n / "image.tif"), str(dataset / n / "label.tif")), BANDS,
                         parse_classes(CLASSES), cfg) for n in "ab"]
    norm_mean, norm_std = band_stats(scenes)
    from geoseg.model.card import Normalization

    norm = Normalization("meanstd", norm_mean, norm_std)
    sampler = WindowSampler(scenes, 3, 32, "balanced", 0.5, seed=0)
    threads: list[str] = []

    def batches(rng):
        for w in batch_windows(sampler.draw(40, rng), 8):
            threads.append(threading.current_thread().name)
            yield make_batch(scenes, w, 32, norm, rng, cfg, torch.channels_last)

    plain = list(batches(np.random.default_rng([3, 1])))
    assert set(threads) == {threading.main_thread().name}
    threads.clear()
    ahead = list(prefetch(batches(np.random.default_rng([3, 1]))))
    assert set(threads) == {"geoseg-train-loader"}
    assert len(ahead) == len(plain) == 5
    for (xa, ta), (xb, tb) in zip(plain, ahead):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
        assert xb.is_contiguous(memory_format=torch.channels_last)


def test_prefetch_is_bounded_raises_the_producers_error_and_stops_when_closed():
    from geoseg.training.batches import prefetch

    produced: list[int] = []

    def count(n):
        for i in range(n):
            produced.append(i)
            yield i

    got = []
    for i in prefetch(count(50), depth=2):
        got.append(i)
        assert len(produced) <= i + 4  # at most depth (queued) + one in hand ahead of the consumer
    assert got == list(range(50))

    produced.clear()
    it = prefetch(count(1000), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert len(produced) < 10
    assert not any(t.name == "geoseg-train-loader" for t in threading.enumerate())

    def broken():
        yield 1
        raise ValueError("window 7 is outside the scene")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="window 7"):
        next(it)
    assert not any(t.name == "geoseg-train-loader" for t in threading.enumerate())
