"""Run by tests/test_engine_ddp.py under torchrun: trains the tiny detector with DDP, then writes
each rank's final weights, its fit() result and a reduce_mean of (rank + 1) to the output folder."""
import json
import os
import sys

import torch

from dwdet.engine import Trainer
from dwdet.utils.dist import get_rank, reduce_mean
from tests.engine_helpers import BUILDERS, tiny_config

OVERRIDES = ["train.batch_size=1", "eval.interval=2", "eval.batch_size=1", "data.flip=False", "model.dropout=0.0"]

if __name__ == "__main__":
    out = sys.argv[1]
    config_dir = os.path.join(out, f"config{os.environ['RANK']}")
    os.makedirs(config_dir)
    trainer = Trainer(tiny_config(config_dir, OVERRIDES), os.path.join(out, "run"), **BUILDERS)
    result = trainer.fit()
    rank = get_rank()
    result["reduce_mean"] = reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank])).tolist()
    torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    torch.distributed.destroy_process_group()
