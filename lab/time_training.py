"""Seconds per training iteration of several configs, side by side: each builds its model and
optimiser as the trainer does, and they take turns step by step (forward under the config's
autocast, backward, optimiser step) on the same batches of the first config's training data, so
that the drifts of a shared machine hit them alike. Reported: each config's median step time and
quartiles, and the ratio of each to the first, per round (median and quartiles).

    python -m lab.time_training configs/lab/fcos_r10_treecrowns.py configs/lab/fcos_effl0_treecrowns.py \\
        --steps 20 --json docs/results/treecrowns_imagenet_timing.json

Run it with ``OMP_NUM_THREADS`` set as the trainings to compare will run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from dwdet.config import load_config
from dwdet.engine.builders import build_model, build_train_data
from dwdet.engine.optim import build_optimizer
from dwdet.engine.precision import autocast
from dwdet.engine.runtime import save_environment, seed_everything
from dwdet.utils.io import write_json


def step_times(configs: list[str], steps: int, warmup: int, overrides: list[str] = ()) -> dict[str, list[float]]:
    """Seconds of each config's ``steps`` timed training steps, after ``warmup`` untimed ones."""
    runs = {}
    for path in configs:
        cfg = load_config(path, list(overrides))
        seed_everything(0)
        model = build_model(cfg).train()
        train = cfg.train
        optimizer = build_optimizer(model, train.optimizer, lr=train.lr, weight_decay=train.weight_decay,
                                    sgd_momentum=train.sgd_momentum, adamw_betas=train.adamw_betas)
        runs[path] = (cfg, model, optimizer)
    dataset, batch_sampler = build_train_data(runs[configs[0]][0])
    epoch = [[dataset[i] for i in indices] for indices in batch_sampler]
    times: dict[str, list[float]] = {path: [] for path in configs}
    for step in range(warmup + steps):
        images, targets = zip(*epoch[step % len(epoch)])
        for path, (cfg, model, optimizer) in runs.items():
            started = time.perf_counter()
            with autocast(torch.device("cpu"), cfg.train.amp):
                losses = model(list(images), list(targets))
            sum(losses.values()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= warmup:
                times[path].append(time.perf_counter() - started)
    return times


def summary(times: dict[str, list[float]]) -> dict:
    first = next(iter(times.values()))
    result = {}
    for path, values in times.items():
        ratios = [b / a for a, b in zip(first, values)]
        result[path] = {"median_s": round(statistics.median(values), 3),
                        "quartiles_s": [round(q, 3) for q in statistics.quantiles(values, n=4)],
                        "ratio_to_first": {"median": round(statistics.median(ratios), 3),
                                           "quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)]},
                        "seconds": [round(v, 4) for v in values]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--opts", nargs="*", default=[], help="overrides for every config")
    parser.add_argument("--json", help="write the step times and the environment here")
    args = parser.parse_args(argv)
    result = summary(step_times(args.configs, args.steps, args.warmup, args.opts))
    for path, row in result.items():
        print(f"{path}: {row['median_s']:.3f} s/it median (quartiles {row['quartiles_s'][0]:.3f}-"
              f"{row['quartiles_s'][2]:.3f}), {row['ratio_to_first']['median']:.2f}x the first")
    if args.json:
        with tempfile.TemporaryDirectory() as folder:
            save_environment(os.path.join(folder, "environment.json"), total_batch=0)
            with open(os.path.join(folder, "environment.json")) as f:
                environment = json.load(f)
        write_json({"environment": environment, "steps": args.steps, "warmup": args.warmup, "results": result},
                   args.json, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
