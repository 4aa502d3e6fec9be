"""A real dask.distributed cluster (worker processes): the COGs are byte-identical to the threaded run's, a worker
killed mid-run has its tasks rerun elsewhere, and no task receives an open dataset or model."""

from __future__ import annotations

import io
import os
import pickle
import socket
import sys
import warnings

import pytest

from geoseg import predict_scene
from geoseg.testing import BANDS4, pattern_scene, write_raster

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker plugin below travels by value

OPTIONS = dict(block_size=256, probabilities=True, tile_size=128, overlap=64)
RASTERS = ("landcover.tif", "probabilities.tif")


@pytest.fixture(scope="module")
def client():
    """One cluster for the module: two worker processes of one thread each (their start costs seconds)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  protocol="tcp") as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def threaded(unet_model, tmp_path_factory):
    """A real (random-weight) Unet on 2 x 2 blocks, on threads: (scene, the rasters' bytes)."""
    tmp = tmp_path_factory.mktemp("cluster")
    data, _ = pattern_scene(300, 333)
    scene = write_raster(tmp / "s.tif", data, descriptions=BANDS4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predict_scene(scene, unet_model, tmp / "threads", **OPTIONS)
    return scene, {n: (tmp / "threads" / n).read_bytes() for n in RASTERS}


def _same(out, reference) -> None:
    for name in RASTERS:
        assert (out / name).read_bytes() == reference[name], name


class SeeGdalOption(distributed.WorkerPlugin):
    """Records, from inside each tile read on a worker, the GDAL option ``GDAL_HTTP_TIMEOUT`` in force."""

    name = "geoseg-see-gdal-option"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def setup(self, worker) -> None:
        import geoseg.predict.tasks as tasks

        original = getattr(tasks.read_window, "__wrapped__", tasks.read_window)
        folder = self.folder

        def read_window(*args, **kwargs):
            from rasterio.env import get_gdal_config

            with open(os.path.join(folder, str(os.getpid())), "w") as f:
                f.write(str(get_gdal_config("GDAL_HTTP_TIMEOUT", normalize=False)))
            return original(*args, **kwargs)

        read_window.__wrapped__ = original  # type: ignore[attr-defined]
        tasks.read_window = read_window

    def teardown(self, worker) -> None:
        import geoseg.predict.tasks as tasks

        tasks.read_window = getattr(tasks.read_window, "__wrapped__", tasks.read_window)


@pytest.mark.filterwarnings("ignore:model test-unet is untrained")
def test_cluster_cogs_are_byte_identical_to_threads(tmp_path, client, threaded, unet_model, monkeypatch):
    scene, reference = threaded
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "37")  # set in the client only, after the workers started
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-workers")
    seen = tmp_path / "seen"
    seen.mkdir()
    client.register_plugin(SeeGdalOption(str(seen)))
    try:
        r = predict_scene(scene, unet_model, tmp_path / "o", client=client, **OPTIONS)
    finally:
        client.unregister_worker_plugin(SeeGdalOption.name)
    _same(tmp_path / "o", reference)
    assert r.extra["resumed_blocks"] == 0
    assert client.status == "running"  # the caller's client is left open
    # GDAL settings reached the worker processes that read the scene, in the threads that read it
    assert {f.read_text() for f in seen.iterdir()} == {"37"}
    # two single-threaded worker processes on this host share its cores
    from geoseg._util.execution import default_workers, threads_by_host

    assert threads_by_host(client) == ((socket.gethostname(), max(1, default_workers() // 2)),)


def test_gdal_settings_forwarded_are_not_secrets():
    from geoseg.io.raster import gdal_config_of_environ

    env = {"GDAL_HTTP_TIMEOUT": "30", "CPL_VSIL_CURL_CHUNK_SIZE": "1048576", "AWS_REGION": "eu-central-1",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "k", "GDAL_HTTP_USERPWD": "u:p",
           "GDAL_HTTP_HEADERS": "Authorization: x", "GDAL_CACHEMAX": "64", "HOME": "/root"}
    assert gdal_config_of_environ(env) == (("AWS_REGION", "eu-central-1"), ("CPL_VSIL_CURL_CHUNK_SIZE", "1048576"),
                                           ("GDAL_HTTP_TIMEOUT", "30"))


class ExitOnce(distributed.WorkerPlugin):
    """The first block task on any worker ends its worker process (``os._exit``) - once for the whole cluster
    (the ``marker`` file, created exclusively, says it happened)."""

    name = "geoseg-exit-once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        import geoseg.predict.tasks as tasks

        original = getattr(tasks.blend_and_write, "__wrapped__", tasks.blend_and_write)
        marker = self.marker

        def blend_and_write(spec, block, *parts):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return original(spec, block, *parts)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os._exit(1)

        blend_and_write.__wrapped__ = original  # type: ignore[attr-defined]
        tasks.blend_and_write = blend_and_write

    def teardown(self, worker) -> None:
        import geoseg.predict.tasks as tasks

        tasks.blend_and_write = getattr(tasks.blend_and_write, "__wrapped__", tasks.blend_and_write)


@pytest.mark.filterwarnings("ignore:model test-unet is untrained")
def test_killed_worker_has_its_tasks_rerun_and_the_result_is_identical(tmp_path, client, threaded, unet_model):
    scene, reference = threaded
    marker = tmp_path / "exited"
    client.register_plugin(ExitOnce(str(marker)))
    try:
        predict_scene(scene, unet_model, tmp_path / "o", client=client, **OPTIONS)
    finally:
        client.unregister_worker_plugin(ExitOnce.name)
    assert marker.exists()  # a worker process did die mid-run
    _same(tmp_path / "o", reference)


def _globals(data: bytes) -> set[str]:
    """The modules whose classes or functions a pickle refers to."""
    found: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            found.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return found


def test_no_task_receives_an_open_dataset_or_model(tmp_path, threaded, unet_model):
    """Every task of the graph pickles small and refers to no class of rasterio, torch or a runtime: paths and
    numbers only."""
    from geoseg.predict import graph
    from geoseg.predict.api import _plan, _spec

    scene, _ = threaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        job = _plan(scene, unet_model, tmp_path / "o", bands=None, tile_size=128, overlap=64, blend="cosine",
                    batch_size=None, block_size=256, workers=None, scheduler="threads", device="auto", amp=None,
                    probabilities=True, confidence=False, allow_ungeoreferenced=False, tta="none", vector=None,
                    vector_options=None, acquired=None)
    spec = _spec(job, "run")
    batch_tasks, block_tasks, _ = graph.build(spec, list(job.plan), job.blocks, gpu=True)
    dsk: dict = {}
    for t in block_tasks:
        dsk.update(dict(t.__dask_graph__()))
    assert len(dsk) > len(job.blocks)
    for key, task in dsk.items():
        data = cloudpickle.dumps(task)
        assert len(data) < 20_000, (key, len(data))
        found = _globals(data)
        assert not {m for m in found if m.split(".")[0] in ("rasterio", "torch", "onnxruntime", "openvino")}, key
        assert "geoseg.predict.tasks" in found
    # a CUDA run on a cluster with GPU workers asks for one per forward task (and only those)
    annotations = {}
    for t in batch_tasks + block_tasks:
        for name, layer in t.dask.layers.items():
            annotations[name] = (layer.annotations or {}).get("resources")
    assert all(annotations[t.key] == {"GPU": 1} for t in batch_tasks)
    assert all(annotations[t.key] is None for t in block_tasks)
