"""tools/gpu_check.sh: its dry run checks every step on the CPU, and its summary judges the targets."""
import json
import os
import subprocess

import tools.gpu_check_summary as summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ["wheels", "build", "cuda_tests", "memcheck", "racecheck", "synccheck", "bench_ops", "bench_train", "train"]


def test_dry_run_checks_every_step(tmp_path):
    out = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=1500)
    log = (tmp_path / "log.txt").read_text()
    assert out.returncode == 0, out.stdout + log
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert [s["step"] for s in steps] == STEPS
    assert all(s["rc"] == 0 and not s["skipped"] for s in steps), steps
    assert "tests collected" in log and "sanitizer cases ran on cpu" in log and "config ok" in log
    assert log.count("arguments ok") == 2
    assert "# GPU check (dry run on the CPU)" in (tmp_path / "summary.md").read_text()


def _bench_ops(assign_ratio, crowded_ms):
    rows = [{"case": "assign", "gts": 100, "mode": "fwd+bwd", "ms": {"fused": 2.0, "dense reference": 2.0 * assign_ratio}},
            {"case": "crowded", "gts": 1000, "mode": "fwd+bwd", "ms": {"fused": crowded_ms},
             "peak_extra_mib": {"fused": 321.0}}]
    return {"device": "NVIDIA H200 (torch 2.11.0)", "rows": rows}


def test_summary_judges_the_gpu_targets():
    met = summary.targets_section(_bench_ops(12.0, 8.5), {"ratios": {"dw / fcos": 1.03}})
    assert met == [
        "- assignment fwd+bwd vs its dense reference (G = 100): 12.0x (target >= 10x): met",
        "- crowded scene (G = 1000, 80 classes, batch 2) fwd+bwd: 8.50 ms (target <= 10 ms): met; "
        "peak extra memory 321 MiB",
        "- DW's training step over FCOS's (R-50, 800 x 1333, batch 2): +3.0 % (target <= +5 %): met",
    ]
    missed = summary.targets_section(_bench_ops(9.0, 12.0), {"ratios": {"dw / fcos": 1.08}})
    assert [line.endswith("not met") or "not met;" in line for line in missed] == [True, True, True]


def test_summary_reads_sanitizer_verdicts_from_the_log():
    log = ("\n===== memcheck (limit 35s): sanitize memcheck\n========= ERROR SUMMARY: 0 errors\n"
           "\n===== racecheck (limit 35s): sanitize racecheck\n========= ERROR SUMMARY: 2 errors\n"
           "\n===== synccheck (limit 35s): sanitize synccheck\nDevice not supported\n")
    assert summary.sanitizer_section(log) == ["- memcheck: ERROR SUMMARY: 0 errors", "- racecheck: ERROR SUMMARY: 2 errors",
                                              "- synccheck: no ERROR SUMMARY line (see log.txt)"]
