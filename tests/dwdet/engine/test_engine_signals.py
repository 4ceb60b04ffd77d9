"""Stopping a run the way schedulers, `timeout` and Ctrl-C do: a signal to the whole process group,
DataLoader worker processes included. The run saves a checkpoint after the iteration in progress,
says so in train.log, exits with status 0, and resumes from there."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dwdet.engine import Trainer, load_checkpoint
from tests.dwdet.engine.signal_worker import OVERRIDES
from tests.engine_helpers import BUILDERS, tiny_config
from tests.paths import ROOT


def worker_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


@pytest.mark.filterwarnings("ignore:resuming with a config that differs")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_saves_and_the_run_resumes(tmp_path, signum):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "tests/dwdet/engine/signal_worker.py", str(tmp_path), str(run_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # training with its workers alive: some iterations logged, two children forked
        while not ((run_dir / "metrics.jsonl").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines())
                   >= 3 and len(worker_pids(proc.pid)) >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run did not start training within 120 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signum)  # the process group: the trainer and its DataLoader workers
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = stderr.decode()
    assert proc.returncode == 0, stderr[-3000:]
    assert "killed by signal" not in stderr and "Traceback" not in stderr
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["status"] == "interrupted"
    ckpt = load_checkpoint(run_dir / "last.pth")
    assert ckpt["progress"]["iteration"] == result["iteration"] >= 3
    log = (run_dir / "train.log").read_text()
    assert f"received {signal.Signals(signum).name}" in log
    assert f"stopped by {signal.Signals(signum).name}" in log and "--resume" in log

    # the saved state continues: one more epoch after the one it stopped in
    epochs = ckpt["progress"]["epoch"] + 2
    cfg = tiny_config(tmp_path, [*OVERRIDES, "train.num_workers=0", f"train.epochs={epochs}"])
    resumed = Trainer(cfg, run_dir, resume=run_dir / "last.pth", **BUILDERS)
    assert resumed.progress.iteration == result["iteration"]
    assert resumed.fit() == {"status": "finished", "epoch": epochs, "iteration": epochs * 32, "metrics": None}
