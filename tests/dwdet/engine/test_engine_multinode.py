"""Two torchrun agents on localhost as two nodes (one gloo process each), meeting at a c10d
rendezvous endpoint and sharing the run folder, as the README's multi-node recipe has it: they
resume a single-process checkpoint (another world size, allowed explicitly), end with the same
weights as the uninterrupted single process of the same total batch, and train.log keeps rank 0's
messages and every rank's warnings."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from dwdet.engine import Trainer
from tests.dwdet.engine.multinode_worker import OVERRIDES
from tests.engine_helpers import BUILDERS, tiny_config
from tests.paths import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_resume_a_single_process_run_and_log_every_rank(tmp_path):
    single = Trainer(tiny_config(tmp_path, OVERRIDES + ["data.sigterm_at=3"]), tmp_path / "run", **BUILDERS)
    assert single.fit()["status"] == "interrupted"  # last.pth after 2 of the 8 iterations
    del single

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                                "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=dwdet-test",
                                "tests/dwdet/engine/multinode_worker.py", str(tmp_path),
                                str(tmp_path / "run" / "last.pth")],
                               cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = []
    for agent in agents:
        try:
            outputs.append(agent.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for a in agents:
                os.killpg(a.pid, signal.SIGKILL)
            pytest.fail("the two torchrun agents timed out:\n" + "\n".join(a.communicate()[0][-2000:] for a in agents))
    assert all(agent.returncode == 0 for agent in agents), "\n---\n".join(o[-3000:] for o in outputs)

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["node"] for r in results) == [0, 1] and all(r["world_size"] == 2 for r in results)
    assert all(r["status"] == "finished" and r["iteration"] == 8 for r in results)
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    reference = Trainer(tiny_config(tmp_path, OVERRIDES), tmp_path / "reference", **BUILDERS)
    reference.fit()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(weights[0][name], weights[1][name]), name
        torch.testing.assert_close(weights[0][name], value, rtol=1e-5, atol=1e-6, msg=name)

    log = (tmp_path / "run" / "train.log").read_text()
    assert "[rank 0] INFO dwdet.engine.trainer: resumed from" in log
    assert "[rank 0] WARNING py.warnings" in log and "not an exact resume" in log
    for rank in (0, 1):
        assert f"[rank {rank}] WARNING dwdet.worker: node" in log and f"holds rank {rank} of 2" in log
    assert "[rank 1] INFO" not in log  # only rank 0's information, everyone's warnings
