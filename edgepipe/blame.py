"""Per-tensor blame for a quantized model that lost quality: which quantizers cost it, in dB of
signal-to-quantization-noise ratio (SQNR), and which nodes keeping each in float means. The format modules
measure (``export.onnx_blame``, ``export.openvino_blame``); this module ranks, records and proposes.

A suspect's ``output_gain_db`` is how much the model's outputs' SQNR against the FP32 model rises when
that one quantizer is left out: the cost at the output, the ranking. ``local_sqnr_db`` is the quantizer's
own SQNR (its input vs its output): cheap to get for all of them, used to choose which to measure at the
output and to order the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Suspects recorded in a manifest; the rest are counted.
RECORDED = 12


@dataclass
class Suspect:
    tensor: str  # the quantized activation (its name in the FP32 model)
    nodes: list[str]  # the nodes that quantize it: keeping them in float leaves the tensor in float
    local_sqnr_db: float
    output_gain_db: float | None  # None: not measured at the output (time budget)
    count: int = 1  # quantizers: more than one for a group


def sqnr_db(signal: np.ndarray, noisy: np.ndarray) -> float:
    """10 log10(|signal|^2 / |signal - noisy|^2), in float64: inf when identical, -inf when the signal is
    zero and the copy is not, nan for non-finite values."""
    s = np.asarray(signal, dtype=np.float64).ravel()
    n = s - np.asarray(noisy, dtype=np.float64).ravel()
    if not (np.isfinite(s).all() and np.isfinite(n).all()):
        return float("nan")
    noise, power = float(np.dot(n, n)), float(np.dot(s, s))
    if noise == 0:
        return float("inf")
    return -math.inf if power == 0 else 10 * math.log10(power / noise)


def rank(suspects: list[Suspect]) -> list[Suspect]:
    """Measured at the output first, largest gain first; then by their own SQNR, lowest first. A tensor
    whose quantizer adds no noise (all zeros, an unused mask) is never a suspect."""
    real = [s for s in suspects if s.local_sqnr_db != math.inf and not math.isnan(s.local_sqnr_db)]
    measured = sorted((s for s in real if s.output_gain_db is not None), key=lambda s: -_num(s.output_gain_db))
    rest = sorted((s for s in real if s.output_gain_db is None), key=lambda s: s.local_sqnr_db)
    return measured + rest


def _num(x: float | None) -> float:
    return -math.inf if x is None or math.isnan(x) else x


def _rounded(x: float | None) -> float | str | None:
    if x is None:
        return None
    return round(x, 2) if math.isfinite(x) else str(x)


@dataclass
class Blame:
    """A quantized model's suspects, ranked (``rank``), and what they were measured on."""

    suspects: list[Suspect]
    tool: str
    output_sqnr_db: float
    samples: int
    seconds: float
    # Quantizers grouped by the op type that makes their tensor, each group left out at once.
    groups: list[Suspect] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.suspects = rank(self.suspects)
        self.groups = rank(self.groups)

    def record(self) -> dict[str, Any]:
        """The manifest block (``quantization.blame``): the top ``RECORDED`` suspects and what was measured."""
        return {
            "tool": self.tool,
            "samples": self.samples,
            "split": "calibration",
            "output_sqnr_db": _rounded(self.output_sqnr_db),
            "quantizers": len(self.suspects),
            "measured_at_output": sum(s.output_gain_db is not None for s in self.suspects),
            "seconds": round(self.seconds, 1),
            "groups": [
                {"op_type": g.tensor, "quantizers": g.count, "output_gain_db": _rounded(g.output_gain_db)}
                for g in self.groups
            ],
            "ranked": [
                {
                    "tensor": s.tensor,
                    "nodes": s.nodes,
                    "local_sqnr_db": _rounded(s.local_sqnr_db),
                    "output_gain_db": _rounded(s.output_gain_db),
                }
                for s in self.suspects[:RECORDED]
            ],
        }

    def costly(self, share: float = 0.25, floor_db: float = 0.1) -> int:
        """How many of the worst suspects cost at least ``share`` of the worst one's gain (and ``floor_db``):
        the quantizers a fix leaves out together when the loss is spread over many of them."""
        gains = [s.output_gain_db for s in self.suspects if s.output_gain_db is not None]
        if not gains or gains[0] < floor_db:
            return 0
        return sum(g >= max(floor_db, share * gains[0]) for g in gains)

    def kept_in_float(self, k: int) -> list[str]:
        """The nodes to keep in float to leave the ``k`` worst quantizers out, in ranking order."""
        nodes: list[str] = []
        for s in self.suspects[:k]:
            nodes += [n for n in s.nodes if n not in nodes]
        return nodes


def summary(name: str, blame: dict[str, Any] | None) -> str | None:
    """One note for the run's report: the worst quantizers and what each costs."""
    if not blame or not blame.get("ranked"):
        return None
    worst = []
    top = (blame.get("groups") or [None])[0]
    single = blame["ranked"][0].get("output_gain_db")
    if top and top.get("output_gain_db") is not None and (single is None or top["output_gain_db"] > single):
        worst.append(
            f"the {top['quantizers']} {top['op_type']} outputs together (+{top['output_gain_db']} dB without them)"
        )
    for s in blame["ranked"][:3]:
        gain = s["output_gain_db"]
        cost = f"+{gain} dB at the output without it" if gain is not None else f"own SQNR {s['local_sqnr_db']} dB"
        worst.append(f"{s['tensor']} ({cost})")
    return (
        f"{name}: blame ({blame['tool']}, {blame['samples']} calibration samples): output SQNR "
        f"{blame['output_sqnr_db']} dB; worst quantizers {'; '.join(worst)}"
    )
