"""Capture what native libraries write to the process's stdout and stderr (file descriptors 1 and 2), which
Python's ``sys.stdout`` redirection does not see: converter progress lines, C++ log lines, and figures
that a library only prints (TFLite Micro's arena allocation report)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """The text written while capturing; read ``text`` after the ``with`` block."""

    text: str = ""


def _flush_c_stdio() -> None:
    """C's stdio buffers what native code printf()s; flush it into the capture before restoring the fds."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    """Send fds 1 and 2 (and Python's sys.stdout/sys.stderr) to a temporary file for the block's duration."""
    result = Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or replaced stream: nothing buffered to lose
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield result
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            _flush_c_stdio()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            result.text = buffer.getvalue() + sink.read().decode(errors="replace")
