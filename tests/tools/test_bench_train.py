"""tools/bench_train.py: the autocast variants of a model are timed beside its float32 step."""
from __future__ import annotations

import json

import pytest
import torch

import tools.bench_train as bench_train


def test_each_amp_setting_is_its_own_timed_model_with_its_ratio_to_float32(monkeypatch):
    seen = []
    real_step_fn = bench_train.step_fn

    def recording_step_fn(model, images, targets, device, amp="none"):
        step = real_step_fn(model, images, targets, device, amp)

        def recorded():
            dtypes = []
            hook = model.backbone.register_forward_hook(lambda m, i, out: dtypes.append(
                (out if torch.is_tensor(out) else next(iter(out.values()))).dtype))
            try:
                return step()
            finally:
                hook.remove()
                seen.append((amp, dtypes[0]))
        return recorded

    monkeypatch.setattr(bench_train, "step_fn", recording_step_fn)
    args = bench_train.parse_args(["--models", "fcos", "--backbone", "resnet18", "--batch", "1", "--height", "64",
                                   "--width", "64", "--gts", "2", "--warmup", "0", "--steps", "2", "--amp", "none",
                                   "bf16"])
    results = bench_train.run(args)
    assert set(results) == {"fcos", "fcos+bf16"} and all(len(r["times_s"]) == 2 for r in results.values())
    # the bf16 variant's backbone ran under autocast, the plain one in float32
    assert set(seen) == {("none", torch.float32), ("bf16", torch.bfloat16)}
    ratios = bench_train.ratios(results)
    assert ratios["fcos+bf16 / fcos"] == pytest.approx(results["fcos+bf16"]["median_s"] / results["fcos"]["median_s"])
    assert bench_train.ratio_spread(results)["fcos+bf16 / fcos"]["rounds"] == 2
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--amp", "fp8"])


def test_the_json_names_the_environment_it_was_measured_in(tmp_path):
    out = tmp_path / "bench.json"
    bench_train.main(["--models", "fcos", "--backbone", "resnet18", "--batch", "1", "--height", "64", "--width", "64",
                      "--gts", "2", "--warmup", "0", "--steps", "1", "--json", str(out)])
    record = json.loads(out.read_text())
    assert {"git_revision", "git_dirty", "cpu", "cpu_capability", "threads", "argv"} <= record["environment"].keys()
    assert record["environment"]["threads"] == torch.get_num_threads()
