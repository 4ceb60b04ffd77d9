"""Run by test_engine_multinode.py in each of two torchrun agents (two 'nodes' of one process
each). Resumes a checkpoint written by a single process (another world size, hence
``allow_world_size_change``) in the run folder both nodes share, finishes the run, and writes this
rank's weights and result; each rank logs one warning, which train.log must keep."""
import json
import logging
import os
import sys

import torch

from dwdet.engine import Trainer
from dwdet.utils.dist import get_rank, get_world_size, process_group
from tests.engine_helpers import BUILDERS, tiny_config

OVERRIDES = ["eval.interval=0", "data.flip=False", "model.dropout=0.0"]


def main() -> None:
    out, checkpoint = sys.argv[1], sys.argv[2]
    node = os.environ["GROUP_RANK"]  # the agent's node rank
    config_dir = os.path.join(out, f"config_node{node}")
    os.makedirs(config_dir)
    cfg = tiny_config(config_dir, OVERRIDES + ["train.batch_size=1"])
    trainer = Trainer(cfg, os.path.join(out, "run"), resume=checkpoint, allow_world_size_change=True, **BUILDERS)
    logging.getLogger("dwdet.worker").warning("node %s holds rank %d of %d", node, get_rank(), get_world_size())
    result = {**trainer.fit(), "rank": get_rank(), "world_size": get_world_size(), "node": int(node)}
    torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{get_rank()}.pt"))
    with open(os.path.join(out, f"rank{get_rank()}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    with process_group():  # opened and closed as dwdet-train does
        main()
