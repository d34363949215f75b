"""Which FakeQuantize nodes of an NNCF INT8 IR cost its quality, ranked, and which layers keeping each in
float means (what NNCF's ``ignored_scope.names`` takes). The same two measurements as
``export.onnx_blame``, read with OpenVINO itself (compiled at f32, so only the quantizers differ):

- **local**: the SQNR of each activation quantizer's output against its input (over the bulk of the
  tensor, below its 99.9th percentile of magnitude), all in one run with every quantizer's ports added as
  outputs;
- **at the output**: for the locally worst, up to ``measured`` of them, the IR with that one FakeQuantize
  bypassed (its readers read its input), and the gain in the outputs' SQNR against the FP32 IR.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.blame import Blame, Suspect, sqnr_db
from edgepipe.export.openvino_inspect import COMPUTE_OPS

Feeds = dict[str, np.ndarray]
TOOL = "OpenVINO FakeQuantize bypass (NNCF IR)"
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}


def _run(core: Any, model: Any, feeds: list[Feeds], outputs: int | None = None) -> list[list[np.ndarray]]:
    """Each feed's outputs (the first ``outputs`` of them), as float64 arrays."""
    compiled = core.compile_model(model, "CPU", CONFIG)
    ports = compiled.outputs[:outputs] if outputs else compiled.outputs
    request = compiled.create_infer_request()
    out = []
    for feed in feeds:
        result = request.infer(feed)
        out.append([np.asarray(result[p], dtype=np.float64).ravel() for p in ports])
    return out


def _flat(runs: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([a for run in runs for a in run])


def _activation_quantizers(model: Any) -> list[Any]:
    """FakeQuantize nodes on activations (a weight's runs once, on a constant)."""

    def constant(node: Any) -> bool:
        while node.get_type_name() in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract"):
            if node.get_type_name() in ("Multiply", "Subtract"):
                return all(constant(node.input_value(i).get_node()) for i in range(node.get_input_size()))
            node = node.input_value(0).get_node()
        return bool(node.get_type_name() == "Constant")

    return [
        op
        for op in model.get_ordered_ops()
        if op.get_type_name() == "FakeQuantize" and not constant(op.input_value(0).get_node())
    ]


def _readers(fq: Any) -> list[Any]:
    return [t.get_node() for t in fq.output(0).get_target_inputs()]


def _local(core: Any, model: Any, fqs: list[Any], feeds: list[Feeds]) -> dict[str, float]:
    """Each quantizer's own SQNR, from one run with their inputs and outputs added as model outputs."""
    probe = model.clone()
    by_name = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    ports = []
    for fq in fqs:
        op = by_name[fq.get_friendly_name()]
        ports += [op.input_value(0), op.output(0)]
    first = len(probe.outputs)
    probe.add_outputs(ports)
    runs = _run(core, probe, feeds)
    out = {}
    for i, fq in enumerate(fqs):
        x = np.concatenate([run[first + 2 * i] for run in runs])
        q = np.concatenate([run[first + 2 * i + 1] for run in runs])
        bulk = np.abs(x) <= np.quantile(np.abs(x), 0.999) if x.size else slice(None)
        out[fq.get_friendly_name()] = sqnr_db(x[bulk], q[bulk])
    return out


def _bypassed(model: Any, names: list[str]) -> Any:
    """A copy of the IR whose named FakeQuantize nodes pass their input through."""
    copy = model.clone()
    by_name = {op.get_friendly_name(): op for op in copy.get_ordered_ops()}
    for name in names:
        fq = by_name[name]
        fq.output(0).replace(fq.input_value(0))
    return copy


def blame(float_path: Path, quantized_path: Path, feeds: list[Feeds], measured: int = 64) -> Blame:
    """The suspects of an NNCF INT8 IR against its FP32 IR, ranked; and the same by the operator type
    that makes each quantized tensor (every quantized Add input at once)."""
    import openvino as ov

    from edgepipe.runtimes.openvino_runtime import read_model

    t0 = time.perf_counter()
    core = ov.Core()
    model = read_model(quantized_path)
    fp32_names = {op.get_friendly_name() for op in read_model(float_path).get_ordered_ops()}
    n_out = len(model.outputs)
    reference = _flat(_run(core, read_model(float_path), feeds))
    base = sqnr_db(reference, _flat(_run(core, model, feeds)))
    fqs = _activation_quantizers(model)
    local = _local(core, model, fqs, feeds)

    def gain(names: list[str]) -> float:
        return sqnr_db(reference, _flat(_run(core, _bypassed(model, names), feeds, n_out))) - base

    def layers(fq: Any) -> list[str]:  # the layers NNCF quantizes it for, by their FP32 names
        return [n.get_friendly_name() for n in _readers(fq) if n.get_friendly_name() in fp32_names]

    groups: dict[str, list[Any]] = {}
    for fq in fqs:
        groups.setdefault(fq.input_value(0).get_node().get_type_name(), []).append(fq)
    kind = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    by_type = [
        Suspect(
            op,
            list(dict.fromkeys(n for fq in group for n in layers(fq) if kind.get(n) not in COMPUTE_OPS)),
            min(local[fq.get_friendly_name()] for fq in group),
            gain([fq.get_friendly_name() for fq in group]),
            len(group),
        )
        for op, group in groups.items()
    ]
    suspects = []
    for i, fq in enumerate(sorted(fqs, key=lambda f: local[f.get_friendly_name()])):
        name = fq.get_friendly_name()
        cost = gain([name]) if i < measured else None  # a count, not a clock: the same ranking every run
        suspects.append(Suspect(name, layers(fq), local[name], cost))
    return Blame(suspects, TOOL, base, len(feeds), time.perf_counter() - t0, by_type)


def fixes(config: Any, blame: Blame) -> Any:
    """What a blame proposes for ``nncf.quantize``, cheapest change first: the worst group's non-compute
    layers in ``ignored_scope.names`` (when it costs >= 1 dB at the output); the single quantizers that
    cost at least a quarter of the worst one's gain left out at once (``Blame.costly``: their readers
    ignored); then the worst 1, 2 and 4."""
    from edgepipe.export.onnx_blame import GROUP_GAIN_DB
    from edgepipe.export.openvino import IgnoredScope

    scope = config.ignored_scope or IgnoredScope()

    def ignoring(names: list[str]) -> Any:
        added = [n for n in names if n not in scope.names]
        return config.model_copy(update={"ignored_scope": scope.model_copy(update={"names": [*scope.names, *added]})})

    group = blame.groups[0] if blame.groups else None
    if group is not None and (group.output_gain_db or 0) >= GROUP_GAIN_DB and group.nodes:
        yield ignoring(group.nodes)
    for k in dict.fromkeys([blame.costly(), 1, 2, 4]):
        if 0 < k <= len(blame.suspects):
            yield ignoring(blame.kept_in_float(k))


def outlier_ranking(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """The matrix products and convolutions with constant weights of an FP32 IR, most outlier-prone input
    first (``edgepipe.search.rank_by_outliers``), by their names (what ``ignored_scope.names`` takes)."""
    import openvino as ov

    from edgepipe.runtimes.openvino_runtime import read_model
    from edgepipe.search import rank_by_outliers

    model = read_model(path)
    nodes = [op for op in model.get_ordered_ops() if op.get_type_name() in COMPUTE_OPS and _constant_weight(op)]
    sources = list({_port_key(op.input_value(0)): op.input_value(0) for op in nodes}.items())
    # add_outputs gives each port's Result (an existing one for a port that is already an output).
    results = model.add_outputs([port for _, port in sources])
    position = {o.get_node().get_friendly_name(): i for i, o in enumerate(model.outputs)}
    where = {key: position[r.get_node().get_friendly_name()] for (key, _), r in zip(sources, results, strict=True)}
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    request = compiled.create_infer_request()

    def activations(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = request.infer(feed)
        return {key: out[compiled.outputs[i]] for key, i in where.items()}

    inputs_of = {op.get_friendly_name(): _port_key(op.input_value(0)) for op in nodes}
    return rank_by_outliers((activations(f) for f in feeds), inputs_of)


def _port_key(port: Any) -> str:
    return f"{port.get_node().get_friendly_name()}:{port.get_index()}"


def _constant_weight(op: Any) -> bool:
    """Whether a compute op's second input is a weight (a constant, possibly converted or reshaped)."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Reshape", "Transpose") and node.get_input_size() > 0:
        node = node.input_value(0).get_node()
    return bool(node.get_type_name() == "Constant")
