"""The live progress line of `perf run` and `perf sweep`: rewritten in place on a
terminal, a plain line now and then elsewhere, and gone before the report is printed."""

import io

from perf.progress import ERASE_LINE, ProgressLine


def test_on_a_terminal_one_line_is_rewritten_with_the_rate_now_and_erased_at_the_end() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, "meshchat 200/s", on_terminal=True)
    for second in range(5):
        line.update(float(second), sent=200 * second, acknowledged=190 * second, errors=0)
    shown = stream.getvalue()
    assert "\n" not in shown
    updates = shown.split(ERASE_LINE)[1:]
    assert len(updates) == 5
    assert updates[-1] == "meshchat 200/s: 4s, 800 sent, 760 acknowledged, 190/s now, 0 errors"
    assert updates[0].endswith(", 0/s now, 0 errors")  # no rate from a single sample
    line.close()
    assert stream.getvalue().endswith(ERASE_LINE)


def test_the_rate_now_follows_a_stall_within_the_window() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, "run", on_terminal=True)
    for second in range(10):
        line.update(float(second), sent=100 * second, acknowledged=100 * min(second, 5), errors=0)
    assert stream.getvalue().endswith(", 0/s now, 0 errors")


def test_elsewhere_a_plain_line_every_interval_and_nothing_to_erase() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, "run", on_terminal=False, plain_interval_s=10.0)
    for tenth in range(0, 251):
        line.update(tenth / 10, sent=tenth, acknowledged=tenth, errors=1)
    line.close()
    lines = stream.getvalue().splitlines()
    assert [text.split(",")[0] for text in lines] == ["run: 0s", "run: 10s", "run: 20s"]
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    assert lines[1] == "run: 10s, 100 sent, 100 acknowledged, 10/s now, 1 errors"
