"""One template for every registered runtime: availability, devices, input checks, GPU when present."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgepipe.errors import InputError, UnavailableError
from edgepipe.runtimes import RUNTIMES, get_runtime

# A model file each runtime can load, from the tiny recipe's artifacts.
MODEL_FOR = {
    "torch": ("torch", "fp32"),
    "onnxruntime": ("onnx", "fp32"),
    "openvino": ("openvino", "fp32"),
    "litert": ("tflite", "fp32"),
    "llama.cpp": ("gguf", "fp32"),  # the test language model (conftest ``lm``); its session: test_gguf.py
}
CLASSIFIER_RUNTIMES = sorted(r for r in RUNTIMES if MODEL_FOR.get(r, ("",))[0] != "gguf")


@pytest.fixture
def model_path(request, exported, torch_artifact):
    def path(runtime: str):
        key = MODEL_FOR[runtime]
        if key[0] == "gguf":
            return request.getfixturevalue("lm")[2][key].model_file
        return torch_artifact.model_file if key[0] == "torch" else exported[key].model_file

    return path


def test_every_registered_runtime_has_a_test_model():
    assert set(RUNTIMES) == set(MODEL_FOR)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runtime_is_available_with_cpu(name):
    rt = get_runtime(name)
    assert rt.unavailable_reason() is None
    assert "cpu" in rt.devices()
    assert rt.version()


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_missing_package_makes_runtime_unavailable_not_a_crash(name, monkeypatch):
    rt = get_runtime(name)
    monkeypatch.setitem(sys.modules, rt.module, None)  # import now raises ImportError
    reason = rt.unavailable_reason()
    assert reason is not None and "pip install" in reason and name in reason
    with pytest.raises(UnavailableError):
        rt.require()


@pytest.mark.parametrize("name", CLASSIFIER_RUNTIMES)
def test_session_runs_and_rejects_wrong_inputs(name, model_path, tiny_task):
    session = get_runtime(name).load(model_path(name), threads=1)
    spec = session.inputs[0]
    n = spec.shape[0] if isinstance(spec.shape[0], int) else 3  # a TFLite file has a static batch of 1
    good = {spec.name: tiny_task.splits["test"][0][:n]}
    session.check_feeds(good)
    (out,) = session.run(good)
    assert out.shape == (n, 10) and out.dtype == np.float32
    with pytest.raises(InputError, match="expected shape"):
        session.check_feeds({spec.name: tiny_task.splits["test"][0][:n, :, :8]})
    with pytest.raises(InputError, match="dtype"):
        session.check_feeds({spec.name: tiny_task.splits["test"][0][:n].astype(np.float64)})
    with pytest.raises(InputError, match="missing"):
        session.check_feeds({})


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_absent_device_is_unavailable(name, model_path):
    with pytest.raises(UnavailableError, match="not available"):
        get_runtime(name).load(model_path(name), device="npu-that-does-not-exist")


@pytest.mark.gpu
@pytest.mark.parametrize("name", CLASSIFIER_RUNTIMES)
def test_gpu_device_matches_cpu(name, model_path, tiny_task):
    rt = get_runtime(name)
    gpu = next((d for d in rt.devices() if d in ("cuda", "gpu")), None)
    if gpu is None:
        pytest.skip(f"{name}: no GPU device on this machine")
    x = {rt.load(model_path(name)).inputs[0].name: tiny_task.splits["test"][0][:1]}
    cpu_out = rt.load(model_path(name)).run(x)[0]
    gpu_out = rt.load(model_path(name), device=gpu).run(x)[0]
    np.testing.assert_allclose(gpu_out, cpu_out, atol=1e-3)
    assert (gpu_out.argmax(1) == cpu_out.argmax(1)).all()


@pytest.mark.parametrize("name", CLASSIFIER_RUNTIMES)
def test_the_timed_call_runs_the_model_on_its_bound_inputs(name, model_path, tiny_task):
    """``run_timed`` is what the harness times: it must really run the model on the feeds (bound once), and
    a runtime's own clock (OpenVINO) must report a positive latency. OpenVINO times a copy compiled for
    the point's static shapes: its outputs must equal the dynamic model's."""
    session = get_runtime(name).load(model_path(name), threads=1)
    spec = session.inputs[0]
    n = spec.shape[0] if isinstance(spec.shape[0], int) else 3
    feeds = {spec.name: tiny_task.splits["test"][0][:n]}
    timed = [session.run_timed(feeds) for _ in range(3)]
    assert all(t is None for t in timed) or all(t is not None and t > 0 for t in timed)
    if name == "openvino":
        assert timed[0] is not None and session.info["static_shapes"] is True
        request = session._bound_request
        static_out = request.get_output_tensor(0).data.copy()
        np.testing.assert_allclose(static_out, session.run(feeds)[0], rtol=1e-5, atol=1e-5)
