"""tools/gpu_check.sh: a faithful dry run of every step, and the summary's verdicts.

The dry run copies what the device call sends (tracked files and untracked ones git does not ignore;
no .git) into a temporary folder, carries .whl/ and the built extension as the call does, and runs
the check there in script mode with the GPU machine's handicaps: no PYTHONPATH, nothing installed
from the checkout, an interpreter without pycocotools and expecttest (a venv that sees only the
other packages of this one), and no git on the PATH.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import tools.bench_train as bench_train
import tools.gpu_check_summary as summary
from tests.paths import ROOT

STEPS = ["env", "wheels", "build", "cuda_tests", "sanitizers", "bench_ops", "bench_train", "train"]
# What comes back from the device: at most 8 files directly under $OUT.
OUTPUTS = {"summary.md", "steps.json", "log.txt", "env.txt", "pytest.xml", "bench_ops.json", "bench_train.json",
           "train_metrics.jsonl"}
ABSENT_ON_THE_GPU = ("pycocotools", "expecttest")  # Python packages the GPU machine lacks


def _device_copy(dest: Path) -> None:
    """The working tree as the device call sends it: tracked files and untracked, not ignored ones."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def _gpu_like_python(venv: Path) -> Path:
    """A venv whose site-packages links every package of this interpreter's but those the GPU
    machine lacks and the checkout's own editable install (no .pth file is linked)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name.lower()
        if (entry.suffix == ".pth" or name.startswith(("__editable__", "dwdet", "dw_ops", "ultralytics"))
                or name.startswith(ABSENT_ON_THE_GPU)):
            continue
        (site / entry.name).symlink_to(entry)
    return venv / "bin"


def _path_without_git(bin_dir: Path) -> str:
    """One folder of links to every command on the PATH but git."""
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for exe in glob.glob(os.path.join(folder, "*")):
            name = os.path.basename(exe)
            if not name.startswith("git") and os.access(exe, os.X_OK) and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(exe)
    return str(bin_dir)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu_check")
    repo, out = base / "repo", base / "out"
    repo.mkdir()
    _device_copy(repo)
    # Carried like the device call's `carry`: the built extension (the check's build step makes it
    # there) and the wheels, here for this interpreter (make gpu-wheels fetches the GPU machine's).
    for so in glob.glob(str(ROOT / "dw_ops" / "_C*.so")):
        shutil.copy2(so, repo / "dw_ops")
    pin = re.search(r"^pycocotools==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "-d", str(repo / ".whl"), f"pycocotools=={pin}"], capture_output=True, text=True)
    assert fetched.returncode == 0, "pip could not fetch the pycocotools wheel:\n" + fetched.stderr
    path = os.pathsep.join([str(_gpu_like_python(base / "venv")), _path_without_git(base / "bin")])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PY")}
    env["PATH"] = path
    before = {p for p in repo.rglob("*") if "__pycache__" not in p.parts}
    run = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(out)], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=900)
    created = {p for p in repo.rglob("*") if "__pycache__" not in p.parts} - before
    return dict(run=run, out=out, repo=repo, env=env, created=created)


def test_dry_run_machine_is_like_the_gpu_machine(dry_run):
    env, repo = dry_run["env"], dry_run["repo"]
    assert not (repo / ".git").exists() and shutil.which("git", path=env["PATH"]) is None
    for module in ABSENT_ON_THE_GPU + ("dwdet",):
        probe = subprocess.run(["python3", "-c", f"import {module}"], cwd="/", env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "No module named" in probe.stderr, module


def test_dry_run_passes_every_step_in_script_mode(dry_run):
    run, out = dry_run["run"], dry_run["out"]
    log = (out / "log.txt").read_text()
    assert run.returncode == 0, run.stdout + run.stderr + log
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == STEPS
    assert all(s["rc"] == 0 and not s["skipped"] for s in steps), steps
    # the tools ran as scripts and wrote their results
    bench_ops = json.loads((out / "bench_ops.json").read_text())
    assert bench_ops["rows"] and "ultralytics is not installed" in bench_ops["peer"]["skipped"]
    assert json.loads((out / "bench_train.json").read_text())["ratio_spread"]["dw / fcos"]["rounds"] == 2
    records = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    assert {r["run"] for r in records if r["type"] == "val" and "AP" in r} == {"fcos", "dw"}  # pycocotools from .whl
    assert "sanitizer cases ran on cpu" in log and "build_info:" in (out / "env.txt").read_text()
    assert "tests=" in (out / "pytest.xml").read_text()
    # the summary is printed at the end
    assert "# GPU check (dry run on the CPU)" in run.stdout and "| train | ok |" in run.stdout


def test_dry_run_outputs_all_come_back_and_fit_the_budget(dry_run):
    out = dry_run["out"]
    assert {p.name for p in out.iterdir()} == OUTPUTS and all(p.is_file() for p in out.iterdir())
    # nothing is left in the copy but build products git ignores
    assert not [p for p in dry_run["created"] if not p.name.endswith((".pyc", ".egg-info"))], dry_run["created"]
    budget = int(re.search(r"^BUDGET_S=(\d+)", (ROOT / "tools" / "gpu_check.sh").read_text(), re.M).group(1))
    assert budget <= 7 * 60  # of the device session's 15 minutes; one call may take 600 s
    assert re.search(r"plan: step limits \d+s \+ training >= \d+s \+ summary \d+s <= budget 420s",
                     (out / "log.txt").read_text())


def test_plan_over_budget_is_refused(tmp_path):
    script = (ROOT / "tools" / "gpu_check.sh").read_text().replace("BUDGET_S=420", "BUDGET_S=300")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "gpu_check.sh").write_text(script)
    run = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(tmp_path / "out")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "plan over budget" in run.stderr


def test_check_requires_an_output_folder():
    run = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and 'tools/gpu_check.sh "$OUT"' in run.stderr


def test_sanitizers_see_every_kernel_of_the_project():
    # The sanitizers check kernels whose names contain dw_ops (--kernel-name kns=dw_ops): every
    # __global__ function must live in the dw_ops namespace.
    for path in glob.glob(str(ROOT / "csrc" / "cuda" / "*.cuh")):
        text = Path(path).read_text()
        for match in re.finditer(r"__global__", text):
            before = text[:match.start()]
            assert before.count("namespace dw_ops {") > before.count("}  // namespace dw_ops"), path
    assert "--kernel-name kns=dw_ops" in (ROOT / "tools" / "gpu_check.sh").read_text()


# ---- the summary ---------------------------------------------------------------------------------------

def _bench_ops(assign_ratio, crowded_ms):
    rows = [{"case": "assign", "gts": 100, "mode": "fwd+bwd",
             "ms": {"fused": 2.0, "dense reference": 2.0 * assign_ratio}, "syncs": 3, "launches": 140},
            {"case": "crowded", "gts": 1000, "mode": "fwd+bwd", "ms": {"fused": crowded_ms},
             "peak_extra_mib": {"fused": 321.0}}]
    return {"device": "NVIDIA H200 (torch 2.11.0)", "rows": rows}


def _bench_train(ratios_per_round):
    fcos = [0.1] * len(ratios_per_round)
    results = {"fcos": {"median_s": 0.1, "times_s": fcos}, "dw": {"median_s": 0.0, "times_s": []}}
    results["dw"]["times_s"] = [0.1 * r for r in ratios_per_round]
    results["dw"]["median_s"] = sorted(results["dw"]["times_s"])[len(ratios_per_round) // 2]
    return {"ratios": bench_train.ratios(results), "ratio_spread": bench_train.ratio_spread(results)}


def test_summary_judges_the_gpu_targets():
    met = summary.targets_section(_bench_ops(12.0, 8.5), _bench_train([1.02, 1.03, 1.01, 1.04] * 5 + [1.03]))
    assert met == [
        "- assignment fwd+bwd vs its dense reference (G = 100): 12.0x (the >= 10x target was set on a CPU; "
        "reported, not judged, on a GPU; one fused call: 3 syncs, 140 launches)",
        "- crowded scene (G = 1000, 80 classes, batch 2) fwd+bwd: 8.50 ms (target <= 10 ms): met; "
        "peak extra memory 321 MiB",
        "- DW's training step over FCOS's (R-50, 800 x 1333, batch 2): +3.0 % (target <= +5 %): met; per-step "
        "ratios +1.5 .. +3.5 % (quartiles of 21 steps)",
    ]
    missed = summary.targets_section(_bench_ops(9.0, 12.0), _bench_train([1.08] * 20))
    assert missed[1].endswith("not met; peak extra memory 321 MiB") and ": not met;" in missed[2]
    straddling = summary.targets_section(None, _bench_train([1.0, 1.02, 1.04, 1.08] * 5))[0]
    assert ": met;" in straddling and straddling.endswith("which straddle the target")
    too_few = summary.targets_section(None, _bench_train([1.01] * 5))
    assert too_few == ["- DW's training step over FCOS's (R-50, 800 x 1333, batch 2): +1.0 % (target <= +5 %): "
                       "no verdict from 5 steps (< 20)"]


def test_summary_judges_ours_against_the_peer_assigner():
    rows = [{"gts": g, "impl": impl, "ms": ms, "positives": 1} for g, impl, ms in
            [(10, "ours (tood)", 2.0), (10, "ultralytics TaskAlignedAssigner", 5.0),
             (1000, "ours (tood)", 9.0), (1000, "ultralytics TaskAlignedAssigner", 6.0)]]
    line = summary.targets_section({"device": "d", "rows": [], "peer": {"rows": rows}}, None)[0]
    assert line == ("- task-aligned assignment, ours against Ultralytics' (goal: faster at every G): 2.5x at G = 10, "
                    "0.7x at G = 1000: not met")


def test_ratio_spread_is_the_quartiles_of_the_rounds():
    spread = _bench_train([1.0, 1.1, 1.2, 1.3, 1.4])["ratio_spread"]["dw / fcos"]
    assert spread["rounds"] == 5 and spread["median"] == pytest.approx(1.2)
    assert spread["q1"] == pytest.approx(1.05) and spread["q3"] == pytest.approx(1.35)


def test_summary_reads_sanitizer_verdicts_from_the_log():
    log = ("\n===== sanitizers (limit 55s): sanitizers\n----- sanitizer memcheck: exit 0\n"
           "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n"
           "----- sanitizer racecheck: exit 1\n========= ERROR SUMMARY: 2 errors\n"
           "----- sanitizer synccheck: exit 1\n========= Error: Device not supported\n"
           "\n===== bench_ops (limit 50s): bench_ops\n")
    assert summary.sanitizer_section(log) == [
        "- memcheck: ERROR SUMMARY: 0 errors", "- racecheck: ERROR SUMMARY: 2 errors (exit 1)",
        "- synccheck: compute-sanitizer does not support this device (no verdict)"]
    assert summary.sanitizer_section("") == [f"- {tool}: did not run" for tool in summary.SANITIZERS]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="{f}"
skipped="{s}" tests="{n}">{cases}</testsuite></testsuites>"""


def _junit(path, cases):
    body = "".join(f'<testcase classname="tests.t" name="{name}">{inner}</testcase>' for name, inner in cases)
    path.write_text(JUNIT.format(f=sum("failure" in c for _, c in cases), s=sum("skipped" in c for _, c in cases),
                                 n=len(cases), cases=body))
    return path


def test_merged_test_report_fails_on_skips_on_the_gpu(tmp_path):
    ok = _junit(tmp_path / "a.xml", [("test_a", ""), ("test_two", '<skipped message="needs two GPUs"/>')])
    skipped = _junit(tmp_path / "b.xml", [("test_b", '<skipped message="needs a CUDA GPU"/>')])
    assert summary.merge_junit(tmp_path / "all.xml", [ok], no_skips=True) == []
    assert summary.merge_junit(tmp_path / "all.xml", [ok, skipped], no_skips=True) == [
        "skipped on the GPU: tests.t::test_b (needs a CUDA GPU)"]
    assert summary.merge_junit(tmp_path / "all.xml", [ok, skipped], no_skips=False) == []
    assert summary.merge_junit(tmp_path / "all.xml", [], no_skips=False) == ["no test ran"]


def test_summary_names_the_test_whose_device_assert_spoiled_the_rest(tmp_path):
    assert_text = '<failure message="RuntimeError: CUDA error: device-side assert triggered"/>'
    _junit(tmp_path / "f.xml", [("test_first", assert_text), ("test_next", assert_text)])
    summary.merge_junit(tmp_path / "pytest.xml", [tmp_path / "f.xml"], no_skips=True)
    lines = summary.tests_section(tmp_path)
    assert lines[0].startswith("CUDA tests: 2 run, 2 failed") and "`tests.t::test_first`" in lines[1]


def test_summary_revision_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")  # the GPU machine has no git
    monkeypatch.setattr(summary, "ROOT", tmp_path)
    assert summary.revision() == "unknown"
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "revision.txt").write_text("c8d2f74-dirty\n")  # what make gpu-wheels writes
    assert summary.revision() == "c8d2f74-dirty (from .whl/revision.txt)"


def test_merged_training_metrics_tag_runs_and_take_a_stopped_runs_checkpoint_ap(tmp_path):
    done, stopped = tmp_path / "done", tmp_path / "stopped"
    done.mkdir(), stopped.mkdir()
    (done / "metrics.jsonl").write_text('{"type": "train", "iter": 1750, "time": 0.03}\n'
                                        '{"type": "val", "iter": 1750, "AP": 0.378, "AP50": 0.6}\n')
    (stopped / "metrics.jsonl").write_text('{"type": "train", "iter": 900, "time": 0.05}\n')
    (stopped / "metrics_last.json").write_text('{"checkpoint": "x/last.pth", "AP": 0.21, "AP50": 0.4}')
    summary.merge_train(tmp_path / "m.jsonl", [f"dw={done}", f"fcos={stopped}"])
    (tmp_path / "train_metrics.jsonl").write_text((tmp_path / "m.jsonl").read_text())
    table = summary.train_section(tmp_path)
    assert table[-2:] == ["| dw | 1750 | 0.0300 | 37.8 | 60.0 | - |",
                          "| fcos | 900 (stopped by the time budget) | 0.0500 | 21.0 | 40.0 | - |"]


def test_bench_ops_keeps_its_rows_when_stopped_by_a_time_limit(tmp_path):
    # The check's time limit kills a step: every row measured so far must be in the JSON already.
    out = tmp_path / "bench_ops.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "tools/bench_ops.py", "--cases", "boundary_sample", "neg_loss",
                             "--gts", "10", "--min-time", "0.01", "--no-memory", "--json", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        first_row = next(line for line in proc.stdout if line.startswith("boundary_sample"))
    finally:
        proc.kill()
        proc.wait()
    assert "fwd" in first_row and proc.returncode != 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["case"] == "boundary_sample" and rows[0]["mode"] == "fwd"
