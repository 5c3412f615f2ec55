"""jobs/care_benchmark.py end to end at toy size through the real CLI: rows per arm and condition, resume, summary."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
import care_benchmark  # noqa: E402

TOY = ["--n", "32", "--care-steps", "2", "--seeds", "0", "--arms", "simulate", "real", "--batch-size", "4",
       "--threads", "1"]


def test_benchmark_scores_every_arm_on_the_held_out_strip_and_resumes(tmp_path):
    out = tmp_path / "bench"
    care_benchmark.main(["--out", str(out), *TOY])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["arm"], r["condition"]) for r in rows} == {(a, c) for a in ("simulate", "real", "bicubic")
                                                         for c in care_benchmark.CONDITIONS}
    for r in rows:
        assert 0 < r["frc_nm"] < 5000 and -1 <= r["pearson_r"] <= 1 and "shift_px" in r
    # the test field is the strip the DDPM never saw: the right 20 % of the real image, on the HR grid
    from factory import images
    strip = images.read_stack(out / "heldout_hr.tif")
    assert strip.pixel_nm == pytest.approx(40.0) and strip.data.shape[-1] < strip.data.shape[-2] / 3
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    care_benchmark.main(["--out", str(out), *TOY])  # rerun: everything is there, nothing is redone
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "table.md"} == \
        {k: v for k, v in stamp.items() if k != "table.md"}
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    with pytest.raises(SystemExit, match="other settings"):
        care_benchmark.main(["--out", str(out), "--n", "64", *TOY[2:]])


def test_summary_reports_the_ratio_the_issue_targets():
    rows = [{"arm": a, "seed": s, "condition": "nominal", "frc_nm": f, "pearson_r": 0.8}
            for a, s, f in (("ddpm", 0, 100.0), ("ddpm", 1, 110.0), ("simulate", 0, 140.0), ("real", 0, 90.0))]
    text = care_benchmark.summarize(rows)
    assert "| ddpm | nominal | 2 | 105.0 [100.0-110.0] |" in text
    assert "DDPM / math-model FRC ratio, nominal: 0.750" in text
    assert "DDPM / real-structure FRC ratio, nominal: 1.167" in text
