"""Which quantized tensors of an onnxruntime QDQ model cost its quality, ranked, and which nodes keeping each
in float means (what ``nodes_to_exclude`` takes).

Two measurements, both on the same calibration inputs, both against the FP32 model:

- **local**: onnxruntime's own ``quantization.qdq_loss_debug`` collects every tensor before its
  QuantizeLinear and after its DequantizeLinear; the signal-to-quantization-noise ratio (SQNR, dB) of that
  pair, over the values below the 99.9th percentile of its magnitude, is the error the quantizer itself
  adds to the bulk of the tensor (over all values, one huge outlier makes a tensor whose other values all
  round to zero look clean). Cheap, one run, but blind to how much the rest of the graph amplifies or
  forgives it.
- **at the output**: for the locally worst tensors, up to ``measured`` of them, the QDQ model runs once
  more with that one Q/DQ pair bypassed (its consumers read the float tensor), and the SQNR of the model's
  outputs is compared with the fully quantized model's. The gain in dB is what that tensor's
  quantization costs the model: the ranking (the idea of NNCF's accuracy-control ranking).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.blame import Blame, Suspect, sqnr_db

Feeds = dict[str, np.ndarray]
QDQ = ("QuantizeLinear", "DequantizeLinear")
COMPUTE_OPS = ("MatMul", "Gemm", "Conv")
# The cost at the output (dB) from which a fix keeps quantizers in float.
GROUP_GAIN_DB = 1.0
TOOL = "onnxruntime.quantization.qdq_loss_debug"


class _Reader:
    """The calibration reader protocol qdq_loss_debug iterates over."""

    def __init__(self, feeds: list[Feeds]):
        self._it = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._it, None)

    def __iter__(self) -> Iterator[Feeds]:
        return iter(self._it)


def _session(model: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _outputs(session: Any, feeds: list[Feeds]) -> list[np.ndarray]:
    return [np.asarray(o, dtype=np.float64).ravel() for f in feeds for o in session.run(None, f)]


def _local_sqnr(float_path: Path, quantized_path: Path, feeds: list[Feeds]) -> dict[str, float]:
    """Each quantized activation's own SQNR (before its Q vs after its DQ), with qdq_loss_debug."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(quantized_path), str(augmented))
        activations = collect_activations(str(augmented), _Reader(feeds))
    matched = create_activation_matching(activations)
    out: dict[str, float] = {}
    for name, pair in matched.items():
        pre, post = pair.get("pre_qdq"), pair.get("post_qdq")
        if pre is not None and post is not None:
            x, q = np.concatenate([np.ravel(p) for p in pre]), np.concatenate([np.ravel(p) for p in post])
            bulk = np.abs(x) <= np.quantile(np.abs(x), 0.999) if x.size else slice(None)
            out[name] = sqnr_db(x[bulk], q[bulk])
    return out


def _pairs(model: Any) -> dict[str, tuple[Any, list[Any]]]:
    """Activation tensor -> (its QuantizeLinear, the DequantizeLinear nodes reading it)."""
    constants = {i.name for i in model.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    pairs = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants:
            dqs = [n for n in readers.get(node.output[0], []) if n.op_type == "DequantizeLinear"]
            if dqs:
                pairs[node.input[0]] = (node, dqs)
    return pairs


def _bypassed(model: Any, pairs: dict[str, tuple[Any, list[Any]]], tensors: list[str]) -> Any:
    """A copy of the QDQ model whose nodes read each of ``tensors`` itself where they read its dequantized
    copy (a dequantized graph output stays: the graph's outputs keep their names)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    outputs = {o.name for o in model.graph.output}
    source = {dq.output[0]: t for t in tensors for dq in pairs[t][1] if dq.output[0] not in outputs}
    for node in copy.graph.node:
        for i, name in enumerate(node.input):
            if name in source:
                node.input[i] = source[name]
    return copy


def _nodes_for(model: Any, tensors: list[str], pairs: dict[str, tuple[Any, list[Any]]]) -> list[str]:
    """The nodes that quantize ``tensors``: their producers and the nodes that read their dequantized copies."""
    wanted = set(tensors)
    replaced = {dq.output[0] for t in tensors for dq in pairs[t][1]}
    names = [
        n.name for n in model.graph.node if n.op_type not in QDQ and (wanted & set(n.output) or replaced & set(n.input))
    ]
    return list(dict.fromkeys(n for n in names if n))


def blame(float_path: Path, quantized_path: Path, feeds: list[Feeds], measured: int = 64) -> Blame:
    """The suspects of a QDQ model against its FP32 model, ranked (see the module docstring); and the same
    for groups of quantizers, by the operator type that makes their tensor (every quantized Add at once)."""
    import onnx

    t0 = time.perf_counter()
    model = onnx.load(str(quantized_path))
    reference = np.concatenate(_outputs(_session(onnx.load(str(float_path))), feeds))
    base = sqnr_db(reference, np.concatenate(_outputs(_session(model), feeds)))
    local = _local_sqnr(float_path, quantized_path, feeds)
    pairs = _pairs(model)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}

    def gain(tensors: list[str]) -> float:
        out = _outputs(_session(_bypassed(model, pairs, tensors)), feeds)
        return sqnr_db(reference, np.concatenate(out)) - base

    groups: dict[str, list[str]] = {}
    for t in pairs:
        groups.setdefault(producer.get(t, "input"), []).append(t)
    kind = {n.name: n.op_type for n in model.graph.node}
    by_type = [  # a group's fix leaves its quantizers out without touching the compute operators around them
        Suspect(
            op,
            [n for n in _nodes_for(model, ts, pairs) if kind[n] not in COMPUTE_OPS],
            min(local.get(t, np.inf) for t in ts),
            gain(ts),
            len(ts),
        )
        for op, ts in groups.items()
    ]
    suspects: list[Suspect] = []
    for i, tensor in enumerate(sorted((t for t in pairs if t in local), key=lambda t: local[t])):
        cost = gain([tensor]) if i < measured else None  # a count, not a clock: the same ranking every run
        suspects.append(Suspect(tensor, _nodes_for(model, [tensor], pairs), local[tensor], cost))
    return Blame(suspects, TOOL, base, len(feeds), time.perf_counter() - t0, by_type)


def fixes(config: Any, blame: Blame) -> Iterator[Any]:
    """What a blame proposes, cheapest change first: the quantizers of the tensors one operator type makes
    left out together when they cost the most at the output (at least ``GROUP_GAIN_DB``), by keeping the
    non-compute nodes that quantize them in float (MatMul, Gemm and Conv stay INT8: their arithmetic is
    the point); then the single quantizers that cost at least a quarter of the worst one's gain kept in
    float at once (``Blame.costly``: their producers and readers); then the worst 1, 2, 4 and 8; then
    percentile calibration."""
    group = blame.groups[0] if blame.groups else None
    if group is not None and (group.output_gain_db or 0) >= GROUP_GAIN_DB and group.nodes:
        keep = [n for n in group.nodes if n not in config.exclude_nodes]
        yield config.model_copy(update={"exclude_nodes": [*config.exclude_nodes, *keep]})
    for k in dict.fromkeys([blame.costly(), 1, 2, 4, 8]):
        if 0 < k <= len(blame.suspects):
            keep = [n for n in blame.kept_in_float(k) if n not in config.exclude_nodes]
            yield config.model_copy(update={"exclude_nodes": [*config.exclude_nodes, *keep]})
    if config.calibrate_method == "minmax":
        yield config.model_copy(update={"calibrate_method": "percentile"})


def outlier_ranking(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """The weighted compute nodes (MatMul, Gemm, Conv with a constant weight) of an FP32 model, most
    outlier-prone input first (``edgepipe.search.rank_by_outliers``), read with onnxruntime."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from edgepipe.search import rank_by_outliers

    model = onnx.load(str(path))
    constants = {i.name for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in COMPUTE_OPS and len(n.input) > 1 and n.input[1] in constants]
    wanted = list(dict.fromkeys(n.input[0] for n in nodes))
    known = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in wanted if t not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    samples = (dict(zip(names, session.run(None, feed), strict=True)) | feed for feed in feeds)
    return rank_by_outliers(samples, {n.name: n.input[0] for n in nodes})
