"""Two-process gloo DDP on CPU, launched with torchrun: a SIGTERM on one rank stops both after the
same iteration, the resumed run ends with identical weights on both ranks, equal to one process
with the same total batch (the normaliser is averaged across ranks), and the gathered evaluation
equals single-process evaluation; one rank failing ends the whole job."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from dwdet.engine import Trainer
from dwdet.engine.evaluation import evaluate
from dwdet.engine.loaders import eval_loader
from tests.dwdet.engine.ddp_worker import OVERRIDES
from tests.engine_helpers import BUILDERS, TinyDetector, build_val_data, tiny_config
from tests.paths import ROOT


def torchrun(args, timeout, expect_success=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *args], cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout}s:\n{output[-3000:]}")
    assert (proc.returncode == 0) == expect_success, output[-3000:]
    return output


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun(["tests/dwdet/engine/ddp_worker.py", str(out)], timeout=240)
    return out


def test_one_failing_rank_ends_the_job_with_its_error(tmp_path):
    # torchrun's agent stops the other rank when one fails; the timeout turns a hang into a failure.
    output = torchrun(["tests/dwdet/engine/ddp_fail_worker.py", str(tmp_path)], timeout=240, expect_success=False)
    assert "injected failure on rank 1" in output


def test_ranks_stop_together_and_end_with_identical_weights(ddp_run):
    results = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(ddp_run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(r["interrupted"] == {"status": "interrupted", "epoch": 0, "iteration": 3, "metrics": None}
               for r in results)
    assert all(r["status"] == "finished" and r["iteration"] == 8 for r in results)
    assert all(r["reduce_mean"] == [1.5, 5.0] for r in results)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert results[1]["metrics"] is None and results[0]["metrics"] is not None


def test_ddp_matches_one_process_with_the_same_total_batch(ddp_run, tmp_path):
    single = Trainer(tiny_config(tmp_path, OVERRIDES + ["train.batch_size=2", "eval.interval=0"]), tmp_path / "run",
                     **BUILDERS)
    single.fit()
    ddp_weights = torch.load(ddp_run / "rank0.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_gathered_evaluation_equals_single_process(ddp_run, tmp_path):
    cfg = tiny_config(tmp_path, OVERRIDES)
    model = TinyDetector(cfg.model.num_classes, cfg.model.dropout)
    model.load_state_dict(torch.load(ddp_run / "rank0.pt", weights_only=True))
    dataset, evaluator = build_val_data(cfg)
    metrics = evaluate(model, eval_loader(dataset, 1, 0), evaluator, torch.device("cpu"), verbose=False)
    assert json.loads((ddp_run / "rank0.json").read_text())["metrics"] == metrics
    log = [json.loads(line) for line in (ddp_run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["type"] == "val"] == [2]
