"""Hostile and broken inputs through the real CLI: every one must end in ONE line on stderr,
``edgepipe: error: ...`` naming the file or the recipe field, the documented exit code (2 bad input,
3 unavailable runtime), no traceback, no crash (a process killed by a signal), its input files unchanged
and nothing left behind outside an explicit ``--out`` / ``--save-outputs`` folder.

    python -m edgepipe.benchmarks.hostile_goals [--keep DIR] [--only ID ...] [--json]

The corpus is made here, in a temporary folder, from scratch: nothing binary is committed and nothing is
trained. The valid base files are tiny: the ONNX model of ``sample_models.multi_onnx`` (and its custom-op
twin), its OpenVINO IR, a one-ADD TFLite model written with the LiteRT flatbuffer schema, and a one-layer
Llama GGUF with random weights and a byte-level tokenizer written with gguf-py, small enough to build in
milliseconds and real enough that llama.cpp loads it and scores a ``--text`` on it. So every case runs
without the test suite's trained language model, and the script needs no argument.

Each case is one command line, run as ``python -m edgepipe.cli ...`` in a fresh interpreter, in the case's
own folder (its working directory, holding copies of the files it needs), with EDGEPIPE_DEBUG removed
from the environment. Damaged model files come in five kinds per format (truncated to a third, a flip of
four bytes in the middle, a flip in the header, empty, another format's bytes under this extension), each
through ``bench`` and ``inspect``. A flip must give an invalid file, not flipped weights: each candidate
position is tried against the format's own reader (``onnx.checker``, OpenVINO's ``read_model``, the LiteRT
interpreter, gguf-py), and the first one that reader refuses is kept; the positions are fixed, so the
corpus is the same on every run. The rest: GGUF headers claiming absurd counts, an unknown operator, an IR
without its ``.bin``, broken recipes, arrays of the wrong shape or type, a pickled array, a ``--shape``
that does not fit, empty and non-UTF-8 text, runtimes that do not exist or cannot be imported (an
``openvino`` package on PYTHONPATH whose import raises), and paths that are folders, missing, or of an
unknown kind.

The script prints how many cases were tried, how many ended in a clean one-line error, and how many
crashed, printed a traceback, modified an input or left files behind; then each failing case on its own
line. Exit code 0 when every case is clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepipe.benchmarks.hostile_cases import CASE_IDS, Case, build_cases

PREFIX = "edgepipe: error: "
TIMEOUT_S = 120.0


@dataclass
class Outcome:
    case: Case
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    problems: list[str]
    crashed: bool = False  # killed by a signal, or hung until the timeout
    traceback: bool = False
    modified: list[str] = field(default_factory=list)  # inputs changed or removed
    left: list[str] = field(default_factory=list)  # new files outside the allowed output folders

    @property
    def clean(self) -> bool:
        return not self.problems


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: relative path -> sha256 of a file, or "<dir>"."""
    return {
        str(p.relative_to(folder)): ("<dir>" if p.is_dir() and not p.is_symlink() else _sha256(p))
        for p in sorted(folder.rglob("*"))
    }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def judge(
    case: Case,
    returncode: int,
    stdout: str,
    stderr: str,
    before: dict[str, str],
    after: dict[str, str],
    timed_out: float | None = None,
) -> Outcome:
    """What is wrong with how a case ended: every broken promise, one string each. ``before`` and ``after``
    are snapshots of the case's folder; ``timed_out``: the seconds after which the command was killed."""
    outcome = Outcome(case, returncode, stdout, stderr, 0.0, [])
    problems = outcome.problems
    if timed_out is not None:
        outcome.crashed = True
        problems.append(f"hung: killed after {timed_out:.0f} s")
    elif returncode < 0:
        outcome.crashed = True
        problems.append(f"crashed: killed by {_signal_name(-returncode)}")
    if "Traceback" in stdout or "Traceback" in stderr:
        outcome.traceback = True
        problems.append("a traceback was printed")
    lines = stderr.strip().splitlines()
    if len(lines) != 1:
        shown = " | ".join(lines[:4]) + (" | ..." if len(lines) > 4 else "")
        problems.append(f"{len(lines)} lines on stderr, not 1: {shown}"[:600])
    elif not lines[0].startswith(PREFIX):
        problems.append(f"the stderr line does not start with {PREFIX!r}: {lines[0]}"[:600])
    else:
        missing = [n for n in case.needles if n not in lines[0]]
        if missing:
            problems.append(f"the error line does not name {missing}: {lines[0]}"[:600])
    if returncode >= 0 and returncode != case.code:
        problems.append(f"exit code {returncode}, expected {case.code}")
    if stdout.strip():
        problems.append(f"stdout is not empty: {stdout.strip().splitlines()[0]}"[:300])
    for name, digest in before.items():
        if after.get(name) != digest:
            outcome.modified.append(name)
    if outcome.modified:
        problems.append(f"inputs modified or removed: {', '.join(outcome.modified)}")
    allowed = [o.relative_to(case.cwd) for o in case.outputs if o.is_relative_to(case.cwd)]
    for name in after:
        if name not in before and not any(Path(name).is_relative_to(a) for a in allowed):
            outcome.left.append(name)
    if outcome.left:
        problems.append(f"left behind: {', '.join(outcome.left[:10])}")
    return outcome


def run_case(case: Case, timeout: float = TIMEOUT_S) -> Outcome:
    """The case's command in a fresh interpreter, in its folder, without EDGEPIPE_DEBUG; judged."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEPIPE_DEBUG"}
    env.update(case.env)
    before = snapshot(case.cwd)
    started = time.perf_counter()
    timed_out = None
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgepipe.cli", *case.argv],
            cwd=case.cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:

        def text(b: bytes | str | None) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        code, stdout, stderr, timed_out = -int(signal.SIGKILL), text(e.stdout), text(e.stderr), timeout
    outcome = judge(case, code, stdout, stderr, before, snapshot(case.cwd), timed_out)
    outcome.seconds = time.perf_counter() - started
    return outcome


# --------------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------------


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "cases": len(outcomes),
        "clean": sum(o.clean for o in outcomes),
        "crashes": sum(o.crashed for o in outcomes),
        "tracebacks": sum(o.traceback for o in outcomes),
        "inputs_modified": sum(bool(o.modified) for o in outcomes),
        "files_left": sum(bool(o.left) for o in outcomes),
        "seconds": round(sum(o.seconds for o in outcomes), 1),
        "failing": [
            {"id": o.case.id, "command": o.case.command(), "exit_code": o.returncode, "problems": o.problems}
            for o in outcomes
            if not o.clean
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", metavar="DIR", help="build the corpus in DIR (must not exist) and keep it")
    parser.add_argument("--only", nargs="+", metavar="ID", choices=CASE_IDS, help="run these cases only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edgepipe-hostile-"))
    if args.keep:
        folder.mkdir(parents=True)
    try:
        cases = build_cases(folder, args.only)
        outcomes = []
        for case in cases:
            outcome = run_case(case)
            outcomes.append(outcome)
            if not args.json:
                state = "ok  " if outcome.clean else "FAIL"
                print(f"  {state} {case.id:<36} exit {outcome.returncode}  {outcome.seconds:5.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    summary = summarize(outcomes)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"cases tried: {summary['cases']}")
        print(f"clean one-line errors: {summary['clean']}")
        print(f"crashes (killed by a signal, or hung): {summary['crashes']}")
        print(f"tracebacks: {summary['tracebacks']}")
        print(f"inputs modified: {summary['inputs_modified']}")
        print(f"files left behind: {summary['files_left']}")
        for failing in summary["failing"]:
            problems = "; ".join(failing["problems"])
            print(f"FAILING {failing['id']}: `{failing['command']}` exit {failing['exit_code']}: {problems}")
    return 0 if not summary["failing"] else 1


if __name__ == "__main__":
    sys.exit(main())
