"""The ``vit`` family beyond the every-family template (tests/test_models.py): its token sequence, its
parameter rules as one-line errors, and an ONNX export (dynamo, dynamic batch) that matches torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgepipe.errors import InputError
from edgepipe.models import validate_params
from edgepipe.models.vit import EXAMPLE_PARAMS, Params, build
from edgepipe.tasks import ModelIO
from edgepipe.tensors import TensorSpec


def _io(size: int = 16, channels: int = 1, num_classes: int | None = 10) -> ModelIO:
    return ModelIO(
        inputs=[TensorSpec(name="input", shape=["batch", channels, size, size], dtype="float32")],
        outputs=[TensorSpec(name="logits", shape=["batch", num_classes or 1], dtype="float32")],
        num_classes=num_classes,
    )


def test_the_sequence_is_one_token_per_patch_plus_the_class_token():
    params = Params(patch_size=4, dim=32, depth=2, heads=4)
    model = build(params, _io(size=32, channels=3)).eval()
    assert model.num_patches == 64 and model.tokens == 65
    assert model.pos_embed.shape == (1, 65, 32) and model.cls_token.shape == (1, 1, 32)
    seen: list[torch.Size] = []
    model.blocks[0].register_forward_hook(lambda _m, args, out: seen.extend([args[0].shape, out.shape]))
    with torch.inference_mode():
        logits = model(torch.zeros(3, 3, 32, 32))
    assert seen == [torch.Size([3, 65, 32])] * 2 and logits.shape == (3, 10)


def test_dim_not_divisible_by_heads_is_a_one_line_error_naming_the_field():
    with pytest.raises(InputError) as e:
        validate_params("vit", {"dim": 30, "heads": 4})
    message = str(e.value)
    assert message.startswith("source.params.dim: 30 is not divisible by heads (4)") and "\n" not in message


def test_a_patch_size_that_does_not_divide_the_image_names_the_field():
    with pytest.raises(InputError, match=r"^source\.params\.patch_size: 5 does not divide the image size 16x16$"):
        build(Params(patch_size=5, dim=16, heads=2), _io(size=16))


def test_it_needs_a_classification_task():
    with pytest.raises(InputError, match="'vit' classifies: it needs a classification task"):
        build(Params(), _io(num_classes=None))


def test_onnx_export_with_a_dynamic_batch_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build(Params.model_validate(EXAMPLE_PARAMS), _io(size=16)).eval()
    path = tmp_path / "vit.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 1, 16, 16),),  # batch 2: a dimension traced at 1 is specialised away
        str(path),
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
        input_names=["input"],
        output_names=["logits"],
        verbose=False,
    )
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"MatMul", "Softmax"} <= ops and not ops & {"Attention", "MultiHeadAttention"}  # plain attention
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 1, 16, 16)).astype(np.float32)
        (got,) = session.run(None, {"input": x})
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
