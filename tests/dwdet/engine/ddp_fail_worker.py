"""Run by test_engine_ddp.py under torchrun: rank 1 fails while rank 0 is already training
(waiting for rank 1 in its first collective). The job must end with rank 1's error, not hang."""
import os
import sys

from dwdet.engine import Trainer
from dwdet.utils.dist import process_group
from tests.engine_helpers import BUILDERS, tiny_config

if __name__ == "__main__":
    out, rank = sys.argv[1], int(os.environ["RANK"])
    config_dir = os.path.join(out, f"config{rank}")
    os.makedirs(config_dir)
    with process_group():
        trainer = Trainer(tiny_config(config_dir, ["train.batch_size=1"]), os.path.join(out, "run"), **BUILDERS)
        if rank == 1:
            raise RuntimeError("injected failure on rank 1")
        trainer.fit()
