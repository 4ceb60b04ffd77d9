"""Checkpoint files: atomic writes survive a crash mid-write; bad files are refused clearly."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dwdet.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint, rng_state, save_checkpoint, \
    set_rng_state
from tests.paths import ROOT


def good_state(value=1.0):
    return {"model": {"weight": torch.full((64, 64), value)}, "progress": {"epoch": 1}}


class FailsToPickle:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_round_trip(tmp_path):
    save_checkpoint(good_state(2.0), tmp_path / "a.pth")
    state = load_checkpoint(tmp_path / "a.pth")
    assert torch.equal(state["model"]["weight"], torch.full((64, 64), 2.0)) and state["progress"] == {"epoch": 1}


def test_error_inside_the_write_keeps_the_previous_file(tmp_path):
    save_checkpoint(good_state(1.0), tmp_path / "last.pth")
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({**good_state(2.0), "bad": FailsToPickle()}, tmp_path / "last.pth")
    assert torch.equal(load_checkpoint(tmp_path / "last.pth")["model"]["weight"], torch.full((64, 64), 1.0))
    assert os.listdir(tmp_path) == ["last.pth"]  # the temporary file was removed


WRITER = """
import sys, time, torch
from dwdet.engine.checkpoint import save_checkpoint
class Stall:
    def __reduce__(self):  # runs in the middle of torch.save
        open(sys.argv[2], "w").close()
        time.sleep(60)
save_checkpoint({"model": {"weight": torch.full((64, 64), 2.0)}, "stall": Stall()}, sys.argv[1])
"""


def test_process_killed_mid_write_keeps_the_previous_file(tmp_path):
    target, marker = tmp_path / "last.pth", tmp_path / "writing"
    save_checkpoint(good_state(1.0), target)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(marker)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the writer exited early"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # it is mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert torch.equal(load_checkpoint(target)["model"]["weight"], torch.full((64, 64), 1.0))


def test_truncated_checkpoint_is_refused(tmp_path):
    save_checkpoint(good_state(), tmp_path / "a.pth")
    data = (tmp_path / "a.pth").read_bytes()
    (tmp_path / "a.pth").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"a.pth is truncated or corrupt"):
        load_checkpoint(tmp_path / "a.pth")


def test_corrupted_byte_is_refused(tmp_path):
    save_checkpoint(good_state(), tmp_path / "a.pth")
    data = bytearray((tmp_path / "a.pth").read_bytes())
    offset = data.find(torch.full((1,), 1.0).numpy().tobytes() * 4)  # inside the stored tensor
    data[offset] ^= 0xFF
    (tmp_path / "a.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt .bad CRC"):
        load_checkpoint(tmp_path / "a.pth")


class Foreign:
    pass


@pytest.mark.parametrize("payload,message", [
    ({"weight": torch.zeros(2)}, r"not a dwdet checkpoint \(no 'dwdet-checkpoint' marker; found \['weight'\]\)"),
    ([torch.zeros(2)], r"not a dwdet checkpoint .*found list"),
    ({"obj": Foreign()}, r"not a dwdet checkpoint: it cannot be loaded as plain tensors"),
    ({"format": "dwdet-checkpoint", "version": 99}, r"checkpoint version 99"),
])
def test_foreign_checkpoints_are_refused(tmp_path, payload, message):
    torch.save(payload, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "x.pth")


def test_missing_and_non_zip_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt, or not written by torch.save"):
        load_checkpoint(tmp_path / "text.pth")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    atomic_save(state, tmp_path / "rng.pth")
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]
