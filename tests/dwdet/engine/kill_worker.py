"""Run by test_engine_kill.py: trains the tiny detector, writing last.pth every iteration,
until the test kills it with SIGKILL."""
import sys

from dwdet.engine import Trainer
from tests.engine_helpers import BUILDERS, tiny_config
from tests.dwdet.engine.test_engine_kill import OVERRIDES

if __name__ == "__main__":
    config_dir, run_dir = sys.argv[1], sys.argv[2]
    Trainer(tiny_config(config_dir, OVERRIDES), run_dir, **BUILDERS).fit()
