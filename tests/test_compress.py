"""Compression stages in torch: structured pruning shrinks tensors and still exports right, budgets are
met, unstructured pruning holds its zeros, distillation learns from its teacher, QAT weights survive each
format's INT8 quantizer, and a stacked recipe compares every file with the dense one."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import TINY_RECIPE
from edgepipe.errors import InputError
from edgepipe.recipe import parse_recipe

pytest.importorskip("torch_pruning")


def _recipe(stages, targets=(), source=None, task=None, base=TINY_RECIPE):
    data = {**base, "stages": list(stages), "targets": list(targets)}
    if source:
        data["source"] = source
    if task:
        data["task"] = task
    return parse_recipe(data, "compress-test.yaml")


def _checkpoints(stages, ctx, store, **kw):
    from edgepipe.chain import build_checkpoints

    return build_checkpoints(_recipe(stages, **kw), ctx, store, force=False)


def _on_int8_grid(weight) -> bool:
    """Every weight an integer step of its output channel's symmetric INT8 scale (max |w| / 127)."""
    import torch

    w = weight.detach().flatten(1)
    steps = w / (w.abs().amax(dim=1, keepdim=True) / 127)
    return bool(torch.allclose(steps, steps.round(), atol=1e-3))


def _matches_torch(artifact, ctx, store, target, runtime, tol=1e-4, base=TINY_RECIPE):
    """The model's export to ``target`` gives the (pruned) torch model's outputs on ``runtime``."""
    import torch

    from edgepipe.chain import build_targets
    from edgepipe.models import load_torch_model
    from edgepipe.runtimes import get_runtime

    [exported] = build_targets(_recipe([], [target], base=base), ctx, artifact, store, force=False).models
    feeds = ctx.example_feeds(artifact, 4 if runtime != "llama.cpp" else 1)
    name = artifact.manifest.inputs[0].name
    with torch.no_grad():
        expected = load_torch_model(artifact)(torch.from_numpy(feeds[name])).numpy()
    with get_runtime(runtime).load(exported.model_file, threads=1) as session:
        got = session.run(feeds)[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < tol


def _onnx_matches_torch(artifact, ctx, store, tol=1e-4, base=TINY_RECIPE):
    _matches_torch(artifact, ctx, store, {"format": "onnx"}, "onnxruntime", tol, base)


def test_structured_pruning_removes_channels_and_the_export_agrees(stage_context, store, torch_artifact):
    from edgepipe.models import load_torch_model

    [dense, pruned] = _checkpoints([{"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 0}}], stage_context, store)
    assert dense.model.sha256 == torch_artifact.sha256 and pruned.tag == "pruned" and pruned.compressed
    module = load_torch_model(pruned.model)
    convs = [m for m in module.features if hasattr(m, "out_channels")]
    assert [c.out_channels for c in convs] == [16, 32]  # the tiny CNN's [32, 64], halved
    assert module.fc.in_features == 32 and module.fc.out_features == 10  # the classes stay
    record = pruned.model.manifest.model["pruning"]
    assert record["macs_after"] < 0.35 * record["macs_before"]
    assert pruned.model.manifest.model["parameters"] == record["parameters_after"] < record["parameters_before"]
    assert "features.0.weight" in pruned.model.manifest.model["resized"]
    _onnx_matches_torch(pruned.model, stage_context, store)


def test_a_pruned_and_fine_tuned_model_reloads_bit_for_bit(stage_context, store):
    import torch
    from safetensors.torch import load_file

    from edgepipe.models import load_torch_model

    stages = [{"stage": "prune", "ratio": 0.5, "steps": 2, "importance": "l1"}, {"stage": "finetune", "epochs": 1}]
    [_, tuned] = _checkpoints(stages, stage_context, store)
    assert tuned.tag == "pruned"  # a fine-tune after pruning makes a pruned model
    saved = load_file(str(tuned.model.model_file))
    loaded = load_torch_model(tuned.model).state_dict()
    assert saved.keys() <= loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert len(tuned.stages) == 2 and len(tuned.stages[0].manifest.model["pruning"]["steps"]) == 2


def test_vit_pruning_removes_whole_heads_and_ffn_width(stage_context, store):
    from edgepipe.models import load_torch_model

    source = {
        "kind": "train",
        "family": "vit",
        "params": {"patch_size": 4, "dim": 32, "depth": 1, "heads": 4, "mlp_ratio": 2},
        "epochs": 1,
        "max_steps": 4,
    }
    stages = [{"stage": "prune", "ratio": 0.5, "importance": "taylor", "finetune": {"epochs": 0}}]
    [_, pruned] = _checkpoints(stages, stage_context, store, source=source)
    module = load_torch_model(pruned.model)
    block = module.blocks[0]
    assert block.attn.heads == 2 and block.attn.q.out_features == 16 and block.attn.proj.in_features == 16
    assert block.mlp[0].out_features == 32 and block.mlp[3].in_features == 32
    assert module.patch_embed.out_channels == 32 and module.head.out_features == 10  # residual width stays
    _onnx_matches_torch(pruned.model, stage_context, store)


def test_llama_pruning_removes_ffn_width_and_keeps_its_heads(tmp_path):
    from conftest import LM_RECIPE
    from edgepipe.chain import build_checkpoints
    from edgepipe.models import load_torch_model
    from edgepipe.stage import StageContext
    from edgepipe.store import ArtifactStore
    from edgepipe.tasks import build_task

    stages = [{"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 0}}]
    data = {**LM_RECIPE, "source": {**LM_RECIPE["source"], "max_steps": 5}, "stages": stages, "targets": []}
    recipe = parse_recipe(data, "lm-prune.yaml")
    ctx = StageContext(build_task(recipe.task, recipe.seed, tmp_path / "data"), recipe.seed)
    store = ArtifactStore(tmp_path / "a")
    [dense, pruned] = build_checkpoints(recipe, ctx, store, force=False)
    before, after = load_torch_model(dense.model).layers[0], load_torch_model(pruned.model).layers[0]
    ffn = before.feed_forward.w_gate.out_features
    assert after.feed_forward.w_gate.out_features == after.feed_forward.w_down.in_features == ffn // 2
    assert after.attention.wq.weight.shape == before.attention.wq.weight.shape  # heads stay whole
    _onnx_matches_torch(pruned.model, ctx, store, tol=1e-3, base=LM_RECIPE)
    if importlib.util.find_spec("llama_cpp"):  # llama.cpp reads the narrower FFN from the GGUF file
        _matches_torch(pruned.model, ctx, store, {"format": "gguf"}, "llama.cpp", 1e-3, LM_RECIPE)


def test_a_vit_learns_from_a_cnn_teacher_then_trains_on_the_int8_grid(stage_context, store):
    """DeiT's recipe in miniature: a ViT student distilled from a CNN teacher, then QAT on its linear layers."""
    import torch

    from edgepipe.compress.common import layers
    from edgepipe.models import load_torch_model

    vit = {"kind": "train", "family": "vit", "params": {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2}}
    stages = [
        {"stage": "distill", "teacher": TINY_RECIPE["source"], "max_steps": 6},
        {"stage": "qat", "max_steps": 4},
    ]
    [_, qat] = _checkpoints(stages, stage_context, store, source={**vit, "epochs": 0})
    assert qat.stages[0].manifest.model["distillation"]["teacher"] == "torch-teacher"
    module = load_torch_model(qat.model)
    linear = {n: m for n, m in layers(module).items() if isinstance(m, torch.nn.Linear)}
    assert {"blocks.0.attn.q", "blocks.0.mlp.0", "head"} <= set(linear)
    assert all(_on_int8_grid(layer.weight) for layer in linear.values())


def test_a_mac_budget_stops_pruning_once_met(stage_context, store):
    [_, pruned] = _checkpoints([{"stage": "prune", "macs": 0.6, "finetune": {"epochs": 0}}], stage_context, store)
    record = pruned.model.manifest.model["pruning"]
    assert record["budget_met"] and record["macs_after"] <= 0.6 * record["macs_before"]
    assert len(record["steps"]) < 10  # stopped at the first step within the budget
    assert record["steps"][-2]["macs"] > 0.6 * record["macs_before"]  # and not before


def test_a_latency_budget_is_measured_on_onnxruntime(stage_context, store):
    stages = [{"stage": "prune", "latency_ms": 1000, "finetune": {"epochs": 0}, "threads": 1}]
    [_, pruned] = _checkpoints(stages, stage_context, store)
    record = pruned.model.manifest.model["pruning"]
    assert record["budget_met"] and len(record["steps"]) == 1
    assert 0 < record["steps"][0]["latency_ms"] < 1000 and record["latency_before_ms"] > 0


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_holds_its_zeros_through_fine_tuning(stage_context, store, scope):
    from edgepipe.compress.common import layers
    from edgepipe.models import load_torch_model

    stages = [{"stage": "sparsify", "sparsity": 0.6, "steps": 2, "scope": scope}]
    [_, sparse] = _checkpoints(stages, stage_context, store)
    record = sparse.model.manifest.model["sparsity"]
    assert abs(record["overall"] - 0.6) < 0.01
    module = load_torch_model(sparse.model)
    for name, layer in layers(module).items():
        zeros = float((layer.weight == 0).float().mean())
        assert zeros == pytest.approx(record["layers"][name], abs=1e-4)
        if scope == "layer":
            assert abs(zeros - 0.6) < 0.02
    assert record["zip_bytes"] < 0.75 * record["dense_zip_bytes"]
    assert record["file_bytes"] == sparse.model.model_file.stat().st_size  # same shapes: a dense file


def test_the_distillation_loss_uses_the_teacher():
    import torch

    from edgepipe.compress.distill import distillation_loss
    from edgepipe.tasks.classification import ClassificationTask

    task = ClassificationTask.__new__(ClassificationTask)  # its loss needs no data
    torch.manual_seed(0)
    student = torch.randn(8, 10, requires_grad=True)
    labels = torch.randint(0, 10, (8,))
    a, b = torch.randn(8, 10), torch.randn(8, 10)
    loss_a = distillation_loss(student, a, labels, task, 4.0, 0.7)
    loss_b = distillation_loss(student, b, labels, task, 4.0, 0.7)
    assert not torch.isclose(loss_a, loss_b)  # dropping the teacher term would make them equal
    # alpha 1: only the teacher; it is zero exactly when the student agrees with it
    assert distillation_loss(a, a, labels, task, 2.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(student, a, labels, task, 4.0, 0.0).item() == pytest.approx(
        task.loss(student, labels).item()
    )


def test_distillation_names_its_teacher_in_the_lineage(stage_context, store):
    stages = [
        {"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 0}},
        {"stage": "distill", "teacher": "source", "epochs": 1},
    ]
    [dense, student] = _checkpoints(stages, stage_context, store)
    assert student.tag == "distilled"
    manifest = student.model.manifest
    roles = {p.role: p.sha256 for p in manifest.lineage.parents}
    assert roles["teacher"] == dense.model.sha256
    assert manifest.model["distillation"]["teacher_sha256"] == dense.model.sha256
    assert manifest.model["training"]["test_metrics"]["accuracy"] > 0.5


def test_a_different_teacher_makes_a_different_student(stage_context, store):
    """Same student, seed and data; only the teacher differs: were its term dropped, the weights would match."""
    import torch
    from safetensors.torch import load_file

    weaker = {**TINY_RECIPE["source"], "epochs": 1}
    students = []
    for teacher in ("source", weaker):
        stages = [
            {"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 0}},
            {"stage": "distill", "teacher": teacher, "epochs": 1},
        ]
        students.append(load_file(str(_checkpoints(stages, stage_context, store)[-1].model.model_file)))
    assert students[0].keys() == students[1].keys()
    assert not all(torch.equal(students[0][k], students[1][k]) for k in students[0])


def test_feature_matching_trains_a_projection_that_is_not_saved(stage_context, store):
    from safetensors.torch import load_file

    hidden = {"student": "pool", "teacher": "pool", "weight": 0.5}
    stages = [
        {"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 0}},
        {"stage": "distill", "teacher": "source", "epochs": 1, "hidden": hidden},
    ]
    [_, student] = _checkpoints(stages, stage_context, store)
    assert student.model.manifest.model["distillation"]["hidden"] == hidden
    saved = load_file(str(student.model.model_file))
    assert not [k for k in saved if "projection" in k]  # the student ships as its own architecture
    bad = [stages[0], {**stages[1], "hidden": {"student": "features.0", "teacher": "pool"}}]
    with pytest.raises(InputError, match=r"distill\.hidden: the student's 'features\.0' gives"):
        _checkpoints(bad, stage_context, store)


def test_a_language_model_distils_next_token_distributions(tmp_path):
    """A smaller decoder learns from a larger one on next-token logits at every position (same tokenizer)."""
    from conftest import LM_RECIPE
    from edgepipe.chain import build_checkpoints
    from edgepipe.stage import StageContext
    from edgepipe.store import ArtifactStore
    from edgepipe.tasks import build_task

    teacher = {**LM_RECIPE["source"], "max_steps": 10}
    student = {**teacher, "params": {**teacher["params"], "dim": 32, "heads": 2, "kv_heads": 1}, "max_steps": 1}
    recipe = parse_recipe(
        {
            **LM_RECIPE,
            "source": student,
            "stages": [{"stage": "distill", "teacher": teacher, "max_steps": 10, "batch_size": 16}],
            "targets": [],
        },
        "lm-distill.yaml",
    )
    task = build_task(recipe.task, recipe.seed, tmp_path / "data")
    [_, distilled] = build_checkpoints(recipe, StageContext(task, 0), ArtifactStore(tmp_path / "a"), force=False)
    record = distilled.model.manifest.model
    assert record["distillation"]["teacher"] == "torch-teacher"
    assert record["parameters"] < record["distillation"]["teacher_parameters"] / 2
    assert np.isfinite(record["training"]["test_metrics"]["perplexity"])


def test_qat_weights_sit_on_the_int8_grid_and_the_int8_file_keeps_them(stage_context, store):
    import onnx
    from onnx import numpy_helper

    from edgepipe.chain import build_targets
    from edgepipe.compress.common import layers
    from edgepipe.models import load_torch_model

    [_, qat] = _checkpoints([{"stage": "qat", "epochs": 1}], stage_context, store)
    assert qat.tag == "qat" and qat.ptq_twin == ""  # its PTQ twin: the dense model's INT8 files
    module = load_torch_model(qat.model)
    assert all(_on_int8_grid(layer.weight) for layer in layers(module).values())
    made = build_targets(
        _recipe([], [{"format": "onnx", "quantize": [{"method": "static"}]}]), stage_context, qat.model, store, False
    )
    int8 = next(a for a in made.models if a.manifest.precision == "int8")
    model = onnx.load(str(int8.model_file))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    fc = module.fc.weight.detach().numpy()
    # The classifier's weight, as the INT8 file stores it (int8 x per-channel scale), is the QAT weight.
    dq = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).shape == fc.shape
    )
    q, scale = inits[dq.input[0]], inits[dq.input[1]]
    assert q.dtype == np.int8
    np.testing.assert_allclose(q.astype(np.float32) * scale.reshape(-1, 1), fc, rtol=1e-5, atol=1e-7)


def test_bad_compression_settings_are_one_line_errors(stage_context, store):
    cases = {
        "stages.0.ratio: give exactly one of ratio, macs or latency_ms (got ratio, macs)": [
            {"stage": "prune", "ratio": 0.5, "macs": 0.5}
        ],
        "stages.0.ratio: Input should be less than 1": [{"stage": "prune", "ratio": 1.5}],
        "stages.0.teacher: Field required": [{"stage": "distill"}],
        "stages.0.scope: Input should be 'global' or 'layer'": [{"stage": "sparsify", "scope": "row"}],
        "stages.0.teacher.kind: unknown model source 'zoo'": [{"stage": "distill", "teacher": {"kind": "zoo"}}],
    }
    for message, stages in cases.items():
        with pytest.raises(InputError) as e:
            _recipe(stages)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"prune\.ignore: the model has no layer 'nope'"):
        _checkpoints([{"stage": "prune", "ratio": 0.5, "ignore": ["nope"]}], stage_context, store)


def test_a_stacked_recipe_compares_every_file_with_the_dense_one(tmp_path):
    from edgepipe.runner import run_recipe

    recipe = _recipe(
        [
            {"stage": "prune", "ratio": 0.5, "finetune": {"epochs": 1}},
            {"stage": "distill", "teacher": "source", "epochs": 1, "export": True},
            {"stage": "qat", "epochs": 1},
        ],
        [{"format": "onnx", "quantize": [{"method": "static"}]}, {"format": "openvino", "quantize": [{}]}],
    )
    result = run_recipe(recipe, tmp_path / "run")
    data = result.results
    assert [c["tag"] for c in data["checkpoints"]] == ["", "distilled", "qat"]
    assert [c["compressed"] for c in data["checkpoints"]] == [False, True, True]
    assert data["checkpoints"][2]["ptq_twin"] == "distilled"
    names = {r.name for r in result.rows}
    assert {"onnx-fp32", "distilled-onnx-int8-static", "qat-openvino-int8-static", "torch-qat"} <= names
    for row in result.rows:
        compressed = row.name.startswith(("distilled-", "qat-")) or row.name in ("torch-distill", "torch-qat")
        assert (row.vs_dense is not None) == compressed, row.name
        if row.vs_dense and row.artifact.format != "torch":
            assert row.vs_dense.baseline == f"{row.artifact.format}-fp32@{row.runtime}"
    # every file is scored against the torch model it came from: FP32 exports agree with their own torch
    assert all(r.parity["top1_agreement"] == 1.0 for r in result.rows if r.artifact.precision == "fp32")
    assert any(
        n.startswith("QAT vs PTQ on onnxruntime: qat-onnx-int8-static against distilled-") for n in data["notes"]
    )
    assert any("torch-pruning removed 50%" in n for n in data["notes"])
