"""Which parts of the detector each method's loss pushes, and how hard: the gradient norm of each
part (backbone, FPN, the class and box towers, the class logits, the box and objectness outputs)
under each run's loss, on the same training batches, from each run's weights.

    python -m lab.grad_parts work_dirs/compare/p80a_fcos/seed0 work_dirs/compare/p80a_dw/seed0 \\
        --checkpoint epoch_2.pth --trained-weights --batches 8 --json docs/results/patterns80_grad_parts/e2_seed0.json

Every run's weights (at ``--checkpoint``) take every run's loss in turn, so that a loss's pull is
seen apart from the state its own training reached. With SGD a part moves by the lr times its
gradient: the ratio of two losses' gradients on a part is the ratio of the steps SGD gives it at
one lr. AdamW scales each parameter's step by its own gradient's size, which takes that ratio out.
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
from pathlib import Path

import torch
from torch import nn

from dwdet.engine import CheckpointError, builders
from dwdet.engine.precision import autocast
from dwdet.engine.runtime import environment_record, seed_everything
from dwdet.utils.io import write_json


def part_of(parameter_name: str) -> str:
    """A parameter's part: the first two components of its name (``head.cls_logits``, ``backbone.fpn``)."""
    return ".".join(parameter_name.split(".")[:2])


def part_gradient_norms(model: nn.Module, loss: nn.Module, batches: list, amp: str) -> dict[str, list[float]]:
    """The gradient norm of each part of ``model`` under ``loss``, one value per batch; the training
    sizes drawn from the same seed for every call, so that every loss sees the same inputs."""
    model.loss = loss
    model.train()
    seed_everything(0)
    norms: dict[str, list[float]] = {}
    for images, targets in batches:
        model.zero_grad(set_to_none=True)
        with autocast(torch.device("cpu"), amp):
            losses = model(list(images), list(targets))
        sum(losses.values()).backward()
        squares: dict[str, float] = {}
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                squares[part_of(name)] = squares.get(part_of(name), 0.0) + float(parameter.grad.double().square().sum())
        for part, square in squares.items():
            norms.setdefault(part, []).append(math.sqrt(square))
    return norms


def training_batches(cfg, count: int) -> list:
    """The first ``count`` batches of the first training epoch of a run of ``cfg``, as it drew them."""
    dataset, batch_sampler = builders.build_train_data(cfg)
    batch_sampler.set_epoch(0)
    return [tuple(zip(*(dataset[i] for i in indices))) for indices in itertools.islice(batch_sampler, count)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of tools/train.py (their config.json and checkpoint)")
    parser.add_argument("--checkpoint", default="last.pth", help="the checkpoint of each run to take the weights from")
    parser.add_argument("--trained-weights", action="store_true",
                        help="for the runs trained with train.ema: their trained weights, not their average")
    parser.add_argument("--batches", type=int, default=8, help="training batches (the first run's first ones)")
    parser.add_argument("--json", help="also write the norms here, with the environment (revision, CPU, command)")
    args = parser.parse_args(argv)
    try:
        loaded = {run: builders.load_run(run, "train", args.checkpoint, args.trained_weights) for run in args.runs}
    except CheckpointError as error:
        raise SystemExit(str(error)) from None
    batches = training_batches(loaded[args.runs[0]][1], args.batches)
    results = {}
    for weights_run, (model, cfg, _) in loaded.items():
        for loss_run, (_, loss_cfg, _) in loaded.items():
            norms = part_gradient_norms(model, builders.build_loss(loss_cfg), batches, cfg.train.amp)
            results[f"{weights_run}|{loss_run}"] = {"weights": str(weights_run), "loss": str(loss_run),
                                                    "median": {p: statistics.median(v) for p, v in norms.items()},
                                                    "per_batch": norms}
    parts = list(next(iter(results.values()))["median"])
    print("| weights | loss | " + " | ".join(parts) + " |")
    print("| --- " * (2 + len(parts)) + "|")
    for result in results.values():
        print(f"| {result['weights']} | {result['loss']} | "
              + " | ".join(f"{result['median'][p]:.3g}" for p in parts) + " |")
    if args.json:
        write_json({"environment": environment_record(), "checkpoint": args.checkpoint, "batches": args.batches,
                    "results": results}, args.json, indent=1)


if __name__ == "__main__":
    main()
