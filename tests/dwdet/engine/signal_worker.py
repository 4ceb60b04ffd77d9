"""Run by test_engine_signals.py in a process group of its own: trains the tiny detector with
two DataLoader worker processes (a record every iteration) until the test signals the whole group,
then prints fit()'s result as JSON."""
import json
import sys

from dwdet.engine import Trainer
from tests.engine_helpers import BUILDERS, tiny_config

# 32 batches an epoch: more than the workers prefetch (2 x 2), so that they still have work to do
# when the signal comes, as in real training
OVERRIDES = ["eval.interval=0", "data.num_train=64", "train.epochs=100000", "train.num_workers=2",
             "train.log_interval=1", "train.checkpoint_interval=0"]

if __name__ == "__main__":
    config_dir, run_dir = sys.argv[1], sys.argv[2]
    result = Trainer(tiny_config(config_dir, OVERRIDES), run_dir, **BUILDERS).fit()
    print(json.dumps(result), flush=True)
