"""What long steps show: bars on a terminal, plain lines elsewhere (a script's output stays parseable)."""

from __future__ import annotations

import io

from edgepipe.progress import Console


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_only_the_lines_are_written():
    out = io.StringIO()
    console = Console(out)
    console.progress("[train] 90 steps", 10, 90)
    console.log("[train] epoch 1/5: loss 1.3")
    console.progress("[train] 90 steps", 90, 90)
    assert out.getvalue() == "[train] epoch 1/5: loss 1.3\n"


def test_on_a_terminal_a_bar_is_drawn_under_the_lines_and_removed_when_done():
    out = Terminal()
    console = Console(out)
    console.progress("[train] 90 steps", 45, 90)
    console.log("[train] epoch 1/5: loss 1.3")
    console.progress("[train] 90 steps", 90, 90)
    console.close()
    text = out.getvalue()
    assert "[train] epoch 1/5: loss 1.3" in text and "[train] 90 steps" in text and "45/90" in text
    assert console._tasks == {}  # the finished step's bar is gone
