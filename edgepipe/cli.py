"""The ``edgepipe`` command. Every error is one line on stderr and a documented exit code
(see ``edgepipe.errors``); set EDGEPIPE_DEBUG=1 to see tracebacks of internal errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from typing import Any, NoReturn

from edgepipe.cli_bench import cmd_bench
from edgepipe.cli_explain import add_parser as add_explain
from edgepipe.errors import EdgepipeError, GateError, InputError, RegressionError, UnavailableError, first_line
from edgepipe.recipe import MAX_THREADS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        self.exit(2, f"edgepipe: error: {message} (see: {self.prog} --help)\n")


def _number(kind: type, low: float, high: float = float("inf"), what: str = "a positive integer") -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1)
_threads = _number(int, 1, MAX_THREADS, f"a thread count from 1 to {MAX_THREADS}")
_non_negative_int = _number(int, 0, what="a non-negative integer")
_fraction = _number(float, 1e-4, 0.9999, "a fraction between 0 and 1, e.g. 0.02")


def _list_of(parse: Any) -> Any:
    """``1,2,4``: one value or several separated by commas, each checked by ``parse``; duplicates dropped."""

    def parse_list(text: str) -> list[Any]:
        values = [parse(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected one value or several separated by commas, got '{text}'")
        return list(dict.fromkeys(values))

    return parse_list


_DB_HELP = "results store, one SQLite file (default: $EDGEPIPE_DB, else ~/.local/share/edgepipe/results.sqlite)"


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text).expanduser()


def _warmup(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(_non_negative_int(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a count of calls (0 or more) or auto, got '{text}'") from None


_positive_seconds = _number(float, 1e-3, 86400.0, "seconds between 0.001 and 86400")


def cmd_run(args: argparse.Namespace) -> int:
    from edgepipe.progress import Console
    from edgepipe.runner import run_recipe

    console = Console()
    try:
        result = run_recipe(
            args.recipe, out_dir=args.out, force=args.force, log=console.log, progress=console.progress, db=args.db
        )
    finally:
        console.close()
    if result.unchecked:
        raise UnavailableError(f"{result.unchecked} (see {result.paths['md']})")
    if result.gate_failures:
        first = result.gate_failures[0]
        raise GateError(
            f"{len(result.gate_failures)} quality gate(s) failed, first: {first} (see {result.paths['md']})"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgepipe.inspection import inspect_model, render

    info = inspect_model(args.model)
    print(json.dumps(info.model_dump(mode="json"), indent=2) if args.json else render(info))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from edgepipe.verification import verify_path

    findings = verify_path(args.path)
    bad = [f for f in findings if not f.ok]
    if args.json:
        print(json.dumps([{**vars(f), "ok": f.ok} for f in findings], indent=2))
    else:
        for f in findings:
            what = f"{f.name} ({f.format}, {f.precision})" if f.name else ""
            if f.partial:
                print(f"partial  {f.path}: a build not finished (or being replaced); runs never read it")
            elif f.ok:
                print(f"ok       {what} {f.path}")
            else:
                print(f"BAD      {what} {f.path}: {'; '.join(f.problems)}")
        partial = sum(f.partial for f in findings)
        total = len(findings) - partial
        print(f"{total} artifacts: {total - len(bad)} ok, {len(bad)} bad; {partial} partial")
    if bad:
        raise InputError(
            f"{args.path}: {len(bad)} artifact(s) fail verification, first: {bad[0].path}: {bad[0].problems[0]}"
        )
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgepipe.export.tflite_micro import bundle_file

    out = Path(args.out or f"{Path(args.model).resolve().name.removesuffix('.tflite')}-bundle")
    info = bundle_file(args.model, out)
    ops = ", ".join(info["ops"])
    print(f"wrote {out}/: {len(info['ops'])} operators ({ops}), tensor arena {info['arena_bytes']:,} bytes")
    print(f"(measured under TFLite Micro); golden output within {info['golden_max_diff_lsb']} of LiteRT's")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from edgepipe.history import list_runs, render_history

    runs = list_runs(args.db, limit=args.limit, recipe=args.recipe)
    print(json.dumps(runs, indent=2) if args.json else render_history(runs))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from edgepipe.history import compare_runs, load_run, render_compare

    report = compare_runs(load_run(args.run_a, args.db), load_run(args.run_b, args.db), args.min_change)
    print(json.dumps(report, indent=2) if args.json else render_compare(report))
    slower = [p for p in report["pairs"] if p["verdict"] in ("regression", "broken")]
    worse = [p for p in report["pairs"] if p.get("quality")]
    if slower or worse:
        first = (slower or worse)[0]
        what = {"regression": f"x{first.get('ratio') or 0:.2f} slower", "broken": "no longer measured"}.get(
            first["verdict"] if first in slower else "", f"{', '.join(first.get('quality') or [])} worse"
        )
        raise RegressionError(
            f"{len(slower)} latency and {len(worse)} quality regression(s) beyond the measured noise, "
            f"first: {first['label']} {what}"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgepipe.benchmarks.html_report import render_html, write_report
    from edgepipe.files import atomic_write_text
    from edgepipe.history import load_run

    out = Path(args.out) if args.out else None
    if Path(args.run).exists():
        path = write_report(Path(args.run), out)
    else:  # a run id in the results store
        results = load_run(args.run, args.db)
        path = out or Path(f"report-{results.get('run_id') or args.run}.html")
        atomic_write_text(path, render_html(results))
    print(f"wrote {path}")
    return 0


def cmd_runtimes(args: argparse.Namespace) -> int:
    from edgepipe.runtimes import describe_runtimes

    report = describe_runtimes()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for r in report:
        state = (
            f"version {r['version']}, devices: {', '.join(r['devices'])}"
            if r["available"]
            else f"unavailable: {r['reason']}"
        )
        print(f"{r['runtime']:<12} formats: {', '.join(r['formats']):<16} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edgepipe import __version__

    p = _Parser(prog="edgepipe", description="Train, compress, export and benchmark models for edge devices.")
    p.add_argument("--version", action="version", version=f"edgepipe {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a recipe end to end (train, export, quantize, benchmark, report)")
    run.add_argument("recipe", help="recipe YAML file, e.g. recipes/quickstart.yaml")
    run.add_argument("--out", help="run folder (default: the recipe's output_dir, else runs/<name>)")
    run.add_argument("--force", action="store_true", help="re-run every stage even if a cached artifact exists")
    run.add_argument("--db", type=_path, help=_DB_HELP)
    run.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="benchmark a model file (.onnx, .xml, .tflite, .gguf) or artifact folder")
    bench.add_argument("model", help="model file or edgepipe artifact folder")
    bench.add_argument(
        "--runtime",
        help="runtime, or several separated by commas (compared on identical inputs); default: the format's",
    )
    bench.add_argument("--device", default="cpu", help="device: cpu, cuda, gpu, ... (default: cpu)")
    bench.add_argument(
        "--threads", type=_list_of(_threads), help="threads for the runtime, or several: 1,2,4 (default: its own)"
    )
    bench.add_argument(
        "--batch-size", type=_list_of(_positive_int), default=[1], help="batch for dynamic batch dims, or several: 1,8"
    )
    bench.add_argument("--seq-len", type=_positive_int, help="length for dynamic sequence dims (default: 32)")
    bench.add_argument(
        "--warmup", type=_warmup, default="auto", help="untimed calls, or auto: until the median settles (default)"
    )
    bench.add_argument("--runs", type=_positive_int, default=300, help="timed calls per process (default: 300)")
    bench.add_argument("--max-seconds", type=_positive_seconds, default=30.0, help="stop a process's timing after this")
    bench.add_argument(
        "--processes",
        type=_non_negative_int,
        default=3,
        help="fresh processes that time each runtime, in turn (default: 3; 0: time in this process)",
    )
    bench.add_argument(
        "--max-processes", type=_positive_int, default=10, help="more while an interval is too wide (default: 10)"
    )
    bench.add_argument(
        "--target", type=_fraction, default=0.02, help="stop once each median is known to +- this (default: 0.02)"
    )
    bench.add_argument(
        "--time-budget", type=_positive_seconds, default=60.0, help="no new round of processes after this (s)"
    )
    bench.add_argument("--no-xnnpack", action="store_true", help="litert: the built-in kernels, without XNNPACK")
    bench.add_argument("--text", help="a UTF-8 text file: the perplexity of a language model (GGUF) on it")
    bench.add_argument(
        "--n-gpu-layers", type=_non_negative_int, help="llama.cpp: layers offloaded to the GPU (default: 0 on cpu)"
    )
    bench.add_argument(
        "--shape",
        action="append",
        metavar="NAME=D1,D2,...",
        help="an input's shape, for dynamic dimensions (repeatable)",
    )
    bench.add_argument(
        "--input", action="append", metavar="NAME=FILE.npy", help="feed this array to an input as it is (repeatable)"
    )
    bench.add_argument("--save-outputs", metavar="DIR", help="write the first run's outputs as DIR/<index>_<name>.npy")
    bench.add_argument(
        "--json", action="store_true", help="print the results row as JSON (a list for several runtimes)"
    )
    bench.set_defaults(func=cmd_bench)

    add_explain(sub, _positive_int, _threads)

    inspect = sub.add_parser("inspect", help="what a model file holds: inputs, outputs, operators, weights")
    inspect.add_argument("model", help=".onnx, .xml (+ .bin), .tflite or .gguf file, or edgepipe artifact folder")
    inspect.add_argument("--json", action="store_true", help="print the inspection as JSON (docs/inspect.md)")
    inspect.set_defaults(func=cmd_inspect)

    verify = sub.add_parser("verify", help="re-check a run's or an artifact's manifests, hashes and readability")
    verify.add_argument("path", help="run folder, artifacts folder or artifact folder")
    verify.add_argument("--json", action="store_true", help="print every finding as JSON")
    verify.set_defaults(func=cmd_verify)

    bundle = sub.add_parser(
        "bundle", help="a TFLite Micro bundle (C arrays, op resolver, arena size) of a .tflite model"
    )
    bundle.add_argument("model", help=".tflite file or edgepipe TFLite artifact folder")
    bundle.add_argument("--out", help="output folder (default: ./<model>-bundle)")
    bundle.set_defaults(func=cmd_bundle)

    history = sub.add_parser("history", help="list recorded runs with their machine and versions, newest first")
    history.add_argument("--recipe", help="only runs of this recipe name")
    history.add_argument("--limit", type=_positive_int, default=20, help="how many runs (default: 20)")
    history.add_argument("--db", type=_path, help=_DB_HELP)
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    compare = sub.add_parser(
        "compare", help="run B against run A, artifact by artifact; exit 5 on a regression beyond the noise"
    )
    compare.add_argument("run_a", help="run id (or unique prefix), run folder or results.json: the baseline")
    compare.add_argument("run_b", help="run id (or unique prefix), run folder or results.json: the candidate")
    compare.add_argument(
        "--min-change", type=_fraction, default=0.05, help="smallest slow-down called a regression (default: 0.05)"
    )
    compare.add_argument("--db", type=_path, help=_DB_HELP)
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=cmd_compare)

    report = sub.add_parser("report", help="a self-contained HTML report of a run: the table and its plots")
    report.add_argument("run", help="run folder, results.json, or run id in the results store")
    report.add_argument("--out", help="HTML file (default: <run>/report.html, or report-<run id>.html)")
    report.add_argument("--db", type=_path, help=_DB_HELP)
    report.set_defaults(func=cmd_report)

    rts = sub.add_parser("runtimes", help="list runtimes, whether they are installed, and their devices")
    rts.add_argument("--json", action="store_true")
    rts.set_defaults(func=cmd_runtimes)
    return p


def _quiet_third_party() -> None:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # torchao (imported by transformers) registers enums with torch's pytree, which logs a deprecation
    # warning per enum on stderr: not the user's business, and it would break the one-line contract.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    # torchao also warns, on import, that its CUDA kernels do not load on a CPU-only machine.
    logging.getLogger("torchao").setLevel(logging.ERROR)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: a running benchmark worker is killed, temporaries are removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    debug = os.environ.get("EDGEPIPE_DEBUG", "") not in ("", "0")
    try:
        code: int = args.func(args)
        return code
    except EdgepipeError as e:
        if debug and e.__cause__ is not None:
            traceback.print_exception(e.__cause__)
        print(f"edgepipe: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgepipe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`edgepipe runtimes --json | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if debug:
            raise
        print(
            f"edgepipe: internal error: {type(e).__name__}: {first_line(e)} (EDGEPIPE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
