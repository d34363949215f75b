"""What a run says about its compression stages: a note per stage (what it removed, zeroed, learned) and a
summary per exported torch model for ``results.json``; and QAT's INT8 files against the post-training
INT8 files of the model QAT started from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.chain import Checkpoint
    from edgepipe.results import ResultRow
    from edgepipe.tasks import Task

# The manifest blocks compression stages write (``model.<block>``).
BLOCKS = ("pruning", "sparsity", "distillation", "qat")


def _m(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def stage_note(artifact: Artifact) -> str | None:
    """One line on what a compression stage did, from its manifest."""
    m, name = artifact.manifest.model, artifact.manifest.name
    if p := m.get("pruning"):
        budget = ""
        if "budget_met" in p:
            asked = ", ".join(f"{k} {v}" for k, v in p["budget"].items() if v is not None)
            budget = f"; budget {asked} {'met' if p['budget_met'] else 'NOT MET'}"
        return (
            f"{name}: torch-pruning removed {p['channel_ratio']:.0%} of the prunable channels ({p['importance']}, "
            f"{len(p['steps'])} step(s)): MACs {_m(p['macs_before'])} -> {_m(p['macs_after'])} "
            f"(x{p['macs_after'] / p['macs_before']:.2f}), parameters {_m(p['parameters_before'])} -> "
            f"{_m(p['parameters_after'])}{budget}. Its speed-up is measured below, not inferred from MACs."
        )
    if s := m.get("sparsity"):
        layers = ", ".join(f"{k} {v:.0%}" for k, v in s["layers"].items())
        return (
            f"{name}: {s['overall']:.1%} of the weights are zero ({s['scope']}; per layer: {layers}); "
            f"the weights zip to {s['zip_bytes'] / 1e6:.2f} MB against {s['dense_zip_bytes'] / 1e6:.2f} MB dense "
            f"(x{s['zip_bytes'] / s['dense_zip_bytes']:.2f}). Dense runtimes multiply the zeros like any other "
            "weight: expect no speed-up from sparsity alone."
        )
    if d := m.get("distillation"):
        ratio = m.get("parameters", 0) / max(d["teacher_parameters"], 1)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in (m.get("training", {}).get("test_metrics") or {}).items())
        teacher = ", ".join(f"{k} {v:.4f}" for k, v in (d.get("teacher_metrics") or {}).items())
        return (
            f"{name}: distilled from {d['teacher']} ({_m(d['teacher_parameters'])} parameters; student x{ratio:.2f}) "
            f"at temperature {d['temperature']:g}, alpha {d['alpha']:g}: student {metrics}"
            + (f", teacher {teacher}" if teacher else "")
            + "."
        )
    if q := m.get("qat"):
        return (
            f"{name}: {len(q['layers'])} layers fine-tuned with INT8 fake quantization; their weights are saved "
            "on the INT8 grid, so each format's INT8 quantizer keeps them exactly."
        )
    return None


def compression_notes(checkpoint: Checkpoint) -> list[str]:
    return [n for a in checkpoint.stages if (n := stage_note(a))]


def checkpoint_summary(checkpoint: Checkpoint, reference_metrics: dict[str, float]) -> dict[str, Any]:
    """A torch model the run exported, for ``results.json``: what it is and what made it."""
    m = checkpoint.model.manifest
    return {
        "tag": checkpoint.tag,
        "name": m.name,
        "sha256": checkpoint.model.sha256,
        "compressed": checkpoint.compressed,
        "parameters": m.model.get("parameters"),
        "reference_metrics": reference_metrics,
        "ptq_twin": checkpoint.ptq_twin,
        "stages": [
            {"name": a.manifest.name, "sha256": a.sha256, **{k: v for k, v in a.manifest.model.items() if k in BLOCKS}}
            for a in checkpoint.stages
        ],
    }


def qat_notes(rows: list[ResultRow], checkpoints: list[Checkpoint], task: type[Task]) -> list[str]:
    """Each INT8 row of a QAT model beside the same quantizer's row for the model QAT started from."""
    notes = []
    for c in checkpoints:
        if c.ptq_twin is None:
            continue
        mine, twin = f"{c.tag}-", f"{c.ptq_twin}-" if c.ptq_twin else ""
        for row in rows:
            name = row.name or ""
            if row.status != "ok" or not name.startswith(mine) or row.artifact.precision in (None, "fp32"):
                continue
            other = twin + name.removeprefix(mine)
            ptq = next((r for r in rows if r.name == other and r.status == "ok" and r.same_setup(row)), None)
            if ptq is None:
                continue
            said = ", ".join(
                f"{m.label} {format(row.metrics[m.name], m.fmt)} vs {format(ptq.metrics[m.name], m.fmt)}"
                for m in task.metrics
                if m.name in row.metrics and m.name in ptq.metrics
            )
            notes.append(f"QAT vs PTQ on {row.runtime}: {name} against {other} (post-training, same tool): {said}.")
    return list(dict.fromkeys(notes))


def quantization_notes(name: str, quantization: dict[str, Any], measure: str | None) -> list[str]:
    """The run's notes on one quantized artifact: its search (what it rejected), the blame of the requested
    configuration (which quantizers cost its quality), its quality budget, its calibration sweep."""
    from edgepipe.blame import summary as blame_summary
    from edgepipe.budget import summary as budget_summary
    from edgepipe.compress.calibration_sweep import sweep_notes
    from edgepipe.search import summary as search_summary

    attempts = (quantization.get("search") or {}).get("attempts") or [{}]
    notes = [
        search_summary(name, quantization, measure),
        blame_summary(name, attempts[0].get("blame")),
        budget_summary(name, quantization),
    ]
    out = [n for n in notes if n]
    if sweep := quantization.get("calibration_sweep"):
        out += sweep_notes(name, sweep)
    return out
