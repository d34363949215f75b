"""One template for every registered model family, and the module spec that rebuilds a torch artifact
without unpickling: a reshaped (pruned) model reloads exactly."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from edgepipe.errors import InputError
from edgepipe.models import FAMILIES, build_module, load_weights, save_torch_model, save_weights, zoo_spec
from edgepipe.tasks import ModelIO
from edgepipe.tensors import TensorSpec

IMAGE_IO = ModelIO(
    inputs=[TensorSpec(name="input", shape=["batch", 1, 16, 16], dtype="float32")],
    outputs=[TensorSpec(name="logits", shape=["batch", 10], dtype="float32")],
    num_classes=10,
)
TEXT_IO = ModelIO(
    inputs=[TensorSpec(name="input_ids", shape=["batch", "sequence"], dtype="int64", value_range=[0, 299])],
    outputs=[TensorSpec(name="logits", shape=["batch", "sequence", 300], dtype="float32")],
    vocab_size=300,
    max_length=64,
)
# What a model for each task kind takes and gives: every family is built for a kind it serves.
IO_FOR_TASK = {"classification": IMAGE_IO, "language-modeling": TEXT_IO}


def _io(family: str) -> ModelIO:
    tasks = importlib.import_module(FAMILIES[family]).TASKS
    return next(IO_FOR_TASK[t] for t in tasks if t in IO_FOR_TASK)


def _example(io: ModelIO) -> torch.Tensor:
    spec = io.inputs[0]
    if spec.dtype == "int64":
        return torch.from_numpy(np.random.default_rng(0).integers(0, 300, size=(2, 12)))
    return torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32))


def _example_model(family: str, tmp_path) -> tuple[dict, torch.nn.Module, torch.Tensor]:
    """A family's module spec from its EXAMPLE_PARAMS, the model it builds (seed 0), and an example input."""
    module = importlib.import_module(FAMILIES[family])
    io = _io(family)
    spec = zoo_spec(family, module.Params.model_validate(module.EXAMPLE_PARAMS).model_dump(), io)
    torch.manual_seed(0)
    return spec, build_module(spec, tmp_path).eval(), _example(io)


def test_every_family_imports_without_torch_and_serves_a_known_task_kind():
    import subprocess
    import sys

    from edgepipe.tasks import TASK_KINDS

    code = "import sys; sys.modules['torch'] = None; import importlib; " + "; ".join(
        f"importlib.import_module({m!r}).Params" for m in FAMILIES.values()
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    for family in FAMILIES:
        assert set(importlib.import_module(FAMILIES[family]).TASKS) <= set(TASK_KINDS)
        _io(family)  # a case for it here


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_from_its_example_params_and_reloads_bit_for_bit(family, tmp_path):
    spec, model, x = _example_model(family, tmp_path)
    io = _io(family)
    with torch.inference_mode():
        out = model(x)
    assert out.shape[0] == x.shape[0] and out.shape[-1] == io.outputs[0].shape[-1]
    assert save_weights(model, tmp_path / "model.safetensors") == sum(p.numel() for p in model.parameters())
    torch.manual_seed(1)  # different initial weights: everything must come from the file
    again = load_weights(build_module(spec, tmp_path), tmp_path / "model.safetensors")
    with torch.inference_mode():
        assert torch.equal(again(x), out)


def _shrink_cnn(model: torch.nn.Module, keep: int) -> None:
    """Remove all but ``keep`` output channels of the first convolution, as structured pruning does."""
    conv, bn, nxt = model.features[0], model.features[1], model.features[3]
    conv.weight = torch.nn.Parameter(conv.weight[:keep].clone())
    bn.weight, bn.bias = torch.nn.Parameter(bn.weight[:keep].clone()), torch.nn.Parameter(bn.bias[:keep].clone())
    bn.running_mean, bn.running_var = bn.running_mean[:keep].clone(), bn.running_var[:keep].clone()
    nxt.weight = torch.nn.Parameter(nxt.weight[:, :keep].clone())
    conv.out_channels = bn.num_features = nxt.in_channels = keep


def test_a_reshaped_model_reloads_exactly_from_its_spec(tmp_path):
    spec = zoo_spec("cnn", {"channels": [16, 32], "convs_per_block": 2, "dropout": 0.0}, IMAGE_IO)
    model = build_module(spec, tmp_path).eval()
    _shrink_cnn(model, keep=5)
    x = _example(IMAGE_IO)
    with torch.inference_mode():
        out = model(x)
    save_weights(model, tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="weights do not fit"):  # not without the spec saying so
        load_weights(build_module(spec, tmp_path), tmp_path / "model.safetensors")
    spec = save_torch_model(model, spec, tmp_path)
    assert spec["resized"] == [
        "features.0.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var",
        "features.1.weight", "features.3.weight",
    ]  # fmt: skip
    again = load_weights(build_module(spec, tmp_path), tmp_path / "model.safetensors", spec["resized"])
    assert again.features[0].weight.shape[0] == 5 and again.features[0].out_channels == 5
    assert again.features[3].in_channels == 5 and again.features[1].num_features == 5
    with torch.inference_mode():
        assert torch.equal(again(x), out)


def test_weights_that_do_not_fit_the_module_are_refused(tmp_path):
    small = build_module(zoo_spec("cnn", {"channels": [8]}, IMAGE_IO), tmp_path)
    save_weights(small, tmp_path / "small.safetensors")
    other = build_module(zoo_spec("cnn", {"channels": [8, 16]}, IMAGE_IO), tmp_path)
    with pytest.raises(InputError, match="weights do not fit the model"):
        load_weights(other, tmp_path / "small.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="not a valid safetensors file"):
        load_weights(other, tmp_path / "bad.safetensors")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_to_onnx_and_openvino_and_agrees_with_torch(family, tmp_path):
    """A new family gets this for free: its example model, with a dynamic batch (and sequence), through
    torch.onnx (dynamo) and OpenVINO's converter, run at two batch sizes against torch."""
    import onnxruntime as ort
    import openvino as ov

    _, model, x = _example_model(family, tmp_path)
    dims = {0: torch.export.Dim("batch", min=1, max=64)}
    if x.dtype == torch.int64:
        dims[1] = torch.export.Dim("sequence", min=2, max=64)
    torch.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=True, dynamic_shapes=({**dims},), verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(
        ov.convert_model(model, example_input=(x,)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    for batch in (x[:1], torch.cat([x, x, x])[:3]):
        with torch.inference_mode():
            expected = model(batch).numpy()
        got_ort = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
        got_ov = compiled(batch.numpy())[0]
        assert np.abs(got_ort - expected).max() < 1e-4 and np.abs(got_ov - expected).max() < 1e-4
