"""Run by test_engine_ddp.py under torchrun. Trains the tiny detector with DDP; rank 1 alone
receives SIGTERM during iteration 3, so both ranks must stop after the same iteration; then the
run resumes from last.pth and finishes. Writes each rank's final weights, fit() results and a
reduce_mean of (rank + 1, 10 * rank) to the output folder."""
import json
import os
import sys

import torch

from dwdet.engine import Trainer
from dwdet.utils.dist import get_rank, process_group, reduce_mean
from tests.engine_helpers import BUILDERS, tiny_config

OVERRIDES = ["train.batch_size=1", "eval.interval=2", "eval.batch_size=1", "data.flip=False", "model.dropout=0.0"]


def main() -> None:
    out, rank = sys.argv[1], int(os.environ["RANK"])
    config_dir, run_dir = os.path.join(out, f"config{rank}"), os.path.join(out, "run")
    os.makedirs(config_dir)
    signal_rank_1 = ["data.sigterm_at=3"] if rank == 1 else []
    interrupted = Trainer(tiny_config(config_dir, OVERRIDES + signal_rank_1), run_dir, **BUILDERS).fit()
    trainer = Trainer(tiny_config(config_dir, OVERRIDES), run_dir, resume=os.path.join(run_dir, "last.pth"),
                      **BUILDERS)
    result = {**trainer.fit(), "interrupted": interrupted}
    result["reduce_mean"] = reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank])).tolist()
    torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{get_rank()}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    with process_group():  # opened and closed as dwdet-train does
        main()
