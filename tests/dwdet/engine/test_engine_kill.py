"""A training process killed with SIGKILL at an arbitrary moment (mid-step or mid-checkpoint-write)
resumes from its last complete checkpoint and ends with exactly the weights of a run that was never
killed."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dwdet.engine import Trainer, load_checkpoint
from tests.engine_helpers import BUILDERS, tiny_config
from tests.paths import ROOT

OVERRIDES = ["eval.interval=0", "train.epochs=100", "train.checkpoint_iters=1", "train.checkpoint_interval=0"]


@pytest.mark.parametrize("delay", [0.3, 1.1])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, delay):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "tests/dwdet/engine/kill_worker.py", str(tmp_path), str(run_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pth").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(delay)  # somewhere in a step or in a checkpoint write
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = load_checkpoint(run_dir / "last.pth")["progress"]["iteration"]
    assert 0 < killed_at < 400

    resumed = Trainer(tiny_config(tmp_path, OVERRIDES), run_dir, resume=run_dir / "last.pth", **BUILDERS)
    assert resumed.fit()["iteration"] == 400
    full = Trainer(tiny_config(tmp_path, OVERRIDES), tmp_path / "full", **BUILDERS)
    full.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
