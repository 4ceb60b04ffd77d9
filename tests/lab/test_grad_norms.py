"""lab/grad_norms.py: the ratio of two paired runs' logged gradient norms."""
import json

import pytest

from lab import grad_norms


def _run(folder, norms, start=10):
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for k, norm in enumerate(norms):
            f.write(json.dumps({"type": "train", "iter": start + 10 * k, "grad_norm": norm}) + "\n")
        f.write(json.dumps({"type": "val", "iter": 80, "AP": 0.1}) + "\n")


def test_ratios_at_shared_iterations_per_seed_and_quarter(tmp_path, capsys):
    _run(tmp_path / "fcos" / "seed0", [1.0, 2.0, 4.0, 4.0, 5.0, 5.0, 2.0, 1.0])
    # logged from iteration 20 on: its first record has no partner, the base's first none either
    _run(tmp_path / "dw" / "seed0", [3.0, 4.0, 6.0, 10.0, 15.0, 6.0, 4.0, 9.0], start=20)
    assert grad_norms.ratios(tmp_path / "fcos" / "seed0", tmp_path / "dw" / "seed0") == [1.5, 1.0, 1.5, 2.0, 3.0, 3.0, 4.0]
    out = tmp_path / "ratios.json"
    grad_norms.main([str(tmp_path / "fcos"), str(tmp_path / "dw"), "--seeds", "0", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["per_seed"]["0"] == {"iterations": 7, "median": 2.0, "quarters": [1.25, 1.75, 3.0, 3.5]}
    assert record["environment"]["threads"] >= 1 and "git_revision" in record["environment"]
    assert "seed 0: 2.00 (1.25, 1.75, 3.00, 3.50), 7 iterations" in capsys.readouterr().out


def test_runs_that_share_no_iteration_are_named(tmp_path):
    _run(tmp_path / "a", [1.0], start=10)
    _run(tmp_path / "b", [1.0], start=15)
    with pytest.raises(SystemExit, match="logged no grad_norm at the same iterations"):
        grad_norms.ratios(tmp_path / "a", tmp_path / "b")
