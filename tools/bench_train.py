"""Time one training step (forward, backward, SGD step) of the same FCOS-R50 detector with the
FCOS baseline loss, with DW and with DW + box refinement, and of torchvision's
``fcos_resnet50_fpn``, on the same input.

    python tools/bench_train.py [--device cpu|cuda] [--steps 5] [--json docs/bench_train_cpu.json]
    python tools/bench_train.py --models fcos dw --amp none bf16   # each model also under bf16 autocast

Input: ``--batch`` images of ``--height`` x ``--width`` (default 2 x 800 x 1333), which every
model keeps at that size (padded to 800 x 1344), 80 classes, ``--gts`` random COCO-like boxes per image.
Backbones are randomly initialised (timing does not depend on the weights; nothing is downloaded).
After ``--warmup`` steps per model, the models take turns step by step, so that drifts of a shared
machine hit them alike; reported are the median step times and their ratios, with the spread of
the ratio over the rounds (each round's step of one model over the other's: quartiles), and on CUDA
the peak allocated memory of a step. With ``--amp none bf16`` each model is also timed under bf16
autocast (as ``train.amp=bf16`` trains), named ``MODEL+bf16``, beside its float32 step. A ratio's
target of a few per cent needs about 20 steps or more.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.detection import fcos_resnet50_fpn  # noqa: E402

from dwdet.engine.precision import AMP_MODES, autocast  # noqa: E402
from dwdet.engine.runtime import environment_record  # noqa: E402
from dwdet.losses import DWLoss, FCOSLoss  # noqa: E402
from dwdet.models import build_fcos  # noqa: E402
from dwdet.utils.env import describe_device  # noqa: E402
from dwdet.utils.io import write_json  # noqa: E402

NUM_CLASSES = 80
MODELS = ("fcos", "dw", "dw_refine", "torchvision_fcos")


def build(name: str, backbone: str, min_size: int = 800, max_size: int = 1333) -> nn.Module:
    """Model ``name`` of :data:`MODELS`, resizing inputs to fit ``min_size`` x ``max_size``: ours
    at the paper's settings, or torchvision's."""
    if name == "torchvision_fcos":
        if backbone != "resnet50":
            raise ValueError("torchvision's fcos_resnet50_fpn only comes with resnet50")
        return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                 min_size=min_size, max_size=max_size)
    loss = FCOSLoss(NUM_CLASSES) if name == "fcos" else DWLoss(NUM_CLASSES)
    return build_fcos(NUM_CLASSES, loss, backbone=backbone, backbone_weights=None, refine=name == "dw_refine",
                      min_size=min_size, max_size=max_size)


def make_batch(batch: int, height: int, width: int, gts: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, height, width, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(gts, 2, generator=g) * torch.tensor([width * 0.9, height * 0.9])
        wh = torch.rand(gts, 2, generator=g) ** 2 * min(height, width) * 0.6 + 8
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(width), float(height)]))], 1)
        labels = torch.randint(NUM_CLASSES, (gts,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def step_fn(model: nn.Module, images, targets, device: str, amp: str = "none") -> Callable[[], float]:
    """One timed training step of ``model`` (the forward under ``amp``'s autocast); returns its seconds."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(torch.device(device), amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def run(args: argparse.Namespace) -> Dict[str, dict]:
    images, targets = make_batch(args.batch, args.height, args.width, args.gts, args.device)
    steps: Dict[str, Callable[[], float]] = {}
    peaks: Dict[str, float] = {}
    for model_name in args.models:
        for amp in args.amp:
            name = model_name if amp == "none" else f"{model_name}+{amp}"
            torch.manual_seed(0)
            # resize to the input's own size: every model sees the same pixels
            model = build(model_name, args.backbone, min(args.height, args.width), max(args.height, args.width))
            model = model.to(args.device).train()
            steps[name] = step_fn(model, images, targets, args.device, amp)
            for _ in range(args.warmup):
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                steps[name]()
                if args.device == "cuda":
                    peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(step())
    results = {}
    for name, values in times.items():
        results[name] = {"median_s": statistics.median(values), "times_s": values}
        if name in peaks:
            results[name]["peak_mib"] = peaks[name]
    return results


def ratios(results: Dict[str, dict]) -> Dict[str, float]:
    """DW's cost over the FCOS baseline, ours against torchvision's, and each model's autocast step
    against its float32 one, from the medians."""
    median = {name: r["median_s"] for name, r in results.items()}
    pairs = {"dw / fcos": ("dw", "fcos"), "dw_refine / fcos": ("dw_refine", "fcos"),
             "fcos / torchvision_fcos": ("fcos", "torchvision_fcos"),
             **{f"{name} / {name.split('+')[0]}": (name, name.split("+")[0]) for name in median if "+" in name}}
    return {label: median[a] / median[b] for label, (a, b) in pairs.items() if a in median and b in median}


def ratio_spread(results: Dict[str, dict]) -> Dict[str, dict]:
    """Quartiles of the round-by-round ratios behind :func:`ratios` (the models take turns, so the
    steps of one round saw the same state of the machine)."""
    spread = {}
    for label in ratios(results):
        a, b = label.split(" / ")
        per_round = [x / y for x, y in zip(results[a]["times_s"], results[b]["times_s"])]
        q1, median, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        spread[label] = {"rounds": len(per_round), "q1": q1, "median": median, "q3": q3}
    return spread


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--backbone", default="resnet50", help="our models' backbone (torchvision's is resnet50)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--gts", type=int, default=10, help="boxes per image")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--amp", nargs="+", choices=list(AMP_MODES), default=["none"],
                        help="the autocast settings to time each model under (none: float32)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU is visible")
    device = describe_device(args.device)
    print(f"device: {device}; {args.batch} x {args.height} x {args.width}, {args.gts} boxes per image")
    results = run(args)
    for name, r in results.items():
        memory = f", peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""
        print(f"{name:>18}: {1000 * r['median_s']:.0f} ms per step (median of {len(r['times_s'])}){memory}")
    spread = ratio_spread(results)
    for label, value in ratios(results).items():
        s = spread[label]
        print(f"{label:>24}: {value:.3f} (per-round quartiles {s['q1']:.3f} .. {s['q3']:.3f} over {s['rounds']})")
    if args.json:
        write_json({"device": device, "environment": environment_record(), "input": vars(args) | {"json": None},
                    "results": results, "ratios": ratios(results), "ratio_spread": spread}, args.json, indent=1)


if __name__ == "__main__":
    main()
