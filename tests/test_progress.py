"""Progress in a log file (stderr not a terminal): plain lines at an interval and one at completion, never a bar."""
from __future__ import annotations

import io
import types

from rich.console import Console

from factory.cli import progress


def _bar_into(buffer: io.StringIO, monkeypatch, **kw) -> progress.Bar:
    monkeypatch.setattr(progress, "console", Console(file=buffer, force_terminal=False, width=200))
    return progress.Bar("sample dpmpp x10", "images", **kw)


def test_a_log_file_gets_a_line_per_interval_and_one_at_the_end(monkeypatch):
    out, now = io.StringIO(), [1000.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))  # a clock the test moves
    with _bar_into(out, monkeypatch, total=4, every_s=10) as bar:
        now[0] += 9.9
        bar.update(1)  # before the first interval: no line
        now[0] += 0.2
        bar.update(2)  # the interval has passed: a line with an ETA
        bar.advance(2)  # done: a line, and no second one on exit
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("sample dpmpp x10: 2/4 images, elapsed ") and "ETA" in lines[0]
    assert lines[1].startswith("sample dpmpp x10: 4/4 images") and "ETA" not in lines[1]
    assert "\x1b" not in out.getvalue() and "━" not in out.getvalue()  # no escape codes, no bar glyphs


def test_an_unknown_total_still_reports_where_it_stopped(monkeypatch):
    out = io.StringIO()
    with _bar_into(out, monkeypatch, every_s=3600) as bar:
        for _ in range(3):
            bar.advance()
    assert len(out.getvalue().splitlines()) == 1  # no interval passed: only the line at the end
    assert out.getvalue().startswith("sample dpmpp x10: 3 images, elapsed ")


def test_an_error_leaves_no_final_line(monkeypatch):
    out = io.StringIO()
    try:
        with _bar_into(out, monkeypatch, total=10, every_s=3600) as bar:
            bar.update(3)
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert out.getvalue() == ""  # the command's one-sentence error is the last word, not a progress line
