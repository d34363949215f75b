"""The HTML report's "Why (not) faster" section: for every explained row (``results["explain"]``, written by
``benchmarks.explain.explain_rows``), the one-line answer, the operator time by precision of the model and
of its FP32 reference side by side, their heaviest operator groups, and the traps found."""

from __future__ import annotations

import html
from typing import Any

TOP = 6


def _shares(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    shares = sorted((report.get("by_precision") or {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0%}" for k, v in shares if v >= 0.005)


def _groups(report: dict[str, Any] | None) -> list[str]:
    if not report:
        return []
    out = []
    for g in (report.get("groups") or [])[:TOP]:
        share = f"{g['share']:.0%}" if g.get("share") is not None else ""
        out.append(f"{g['op_type']} {g['precision']} x{g['count']} {share}".strip())
    return out


def explain_section(results: dict[str, Any]) -> str:
    """The section's HTML ("" when the run explained nothing)."""
    explained = results.get("explain") or {}
    if not isinstance(explained, dict) or not explained:
        return ""
    e = html.escape
    parts = ["<h2>Why (not) faster</h2>"]
    for label, entry in explained.items():
        if not isinstance(entry, dict):
            continue
        if "error" in entry:
            parts.append(f"<p><b>{e(label)}</b>: could not be explained: {e(str(entry['error']))}</p>")
            continue
        model, reference = entry.get("model"), entry.get("reference")
        rows = [("time by precision", _shares(model), _shares(reference))]
        heavy, ref_heavy = _groups(model), _groups(reference)
        for i in range(max(len(heavy), len(ref_heavy))):
            left, right = (x[i] if i < len(x) else "" for x in (heavy, ref_heavy))
            rows.append(("" if i else "heaviest operators", left, right))
        table = "".join(f"<tr><th>{e(a)}</th><td>{e(b)}</td><td>{e(c)}</td></tr>" for a, b, c in rows)
        traps = "".join(f"<li>[{e(f['code'])}] {e(f['message'])}</li>" for f in entry.get("findings") or [])
        parts += [
            f"<h3>{e(label)}</h3>",
            f"<p>{e(str(entry.get('answer', '')))}</p>",
            f"<table><thead><tr><th></th><th>this model</th><th>FP32 reference</th></tr></thead>"
            f"<tbody>{table}</tbody></table>",
            f"<ul>{traps}</ul>" if traps else "",
        ]
    return "\n".join(parts)
