"""Speed and peak memory of the fused dw_ops operators against their dense references.

    python tools/bench_ops.py [--device cpu|cuda] [--gts 10 50 100] [--cases ...] [--json docs/bench_ops_cpu.json]
    python tools/bench_ops.py --cases --peer [--peer-gts 10 100 1000] --json docs/bench_peer_cpu.json

COCO-like sizes: an 800 x 1333 input padded to 800 x 1344 (P = 22,400 points over P3-P7),
batch 2, 80 classes. The ``crowded`` case is the assignment (bag IoU, weights and negative term) of
a crowded scene, G = 1000 boxes per image, whatever --gts says (fused only: its dense reference
would need several GB). Times are medians of torch.utils.benchmark measurements; each comparison is
measured side by side in one run. Peak extra memory: on CPU the RSS high-water mark above the
inputs, per case in a fresh subprocess (Linux); on CUDA torch.cuda.max_memory_allocated above the
inputs, in this process. On CUDA each fused row also counts the host synchronisations and the GPU
activities (kernels, copies, memsets) of one call. The JSON is rewritten after every row, so that
a run stopped early keeps what it measured.

--peer times the task-aligned assignment of Ultralytics' ``TaskAlignedAssigner`` (topk 13, alpha 1,
beta 6, its published defaults; an optional import, skipped with a message when ultralytics is not
installed) against ours (``loss.type=tood``, candidate-bag IoU included) and DW's assignment, on the
same problem at --peer-gts, with the number of positives each finds.
"""
from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's dwdet, and lab for custom_imports

import torch  # noqa: E402
import torch.utils.benchmark as tbench  # noqa: E402

import dw_ops  # noqa: E402
from dw_ops import reference  # noqa: E402
from dwdet.engine.runtime import environment_record  # noqa: E402
from dwdet.losses import DWLoss, assign_dw, assign_task_aligned, prepare_batch  # noqa: E402
from dwdet.models.points import anchor_points  # noqa: E402
from dwdet.utils.env import describe_device  # noqa: E402
from dwdet.utils.io import write_json  # noqa: E402

SIZES = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
STRIDES = (8, 16, 32, 64, 128)
BATCH, CLASSES = 2, 80
CROWDED_GTS = 1000  # boxes per image of the crowded-scene case


def make_problem(num_gts: int, device: str, seed: int = 0) -> dict:
    """Head outputs of a detector early in training, and num_gts COCO-like boxes per image."""
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(BATCH, CLASSES, h, w, generator=g) - 4 for h, w in SIZES]
    ctr = [torch.randn(BATCH, 1, h, w, generator=g) for h, w in SIZES]
    reg = [torch.rand(BATCH, 4, h, w, generator=g) * s * 4 + 1 for (h, w), s in zip(SIZES, STRIDES)]
    boxes, labels = [], []
    for _ in range(BATCH):
        xy = torch.rand(num_gts, 2, generator=g) * torch.tensor([1250.0, 720.0])
        wh = torch.rand(num_gts, 2, generator=g) ** 2 * 500 + 4
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=torch.tensor([1344.0, 800.0]))], 1).to(device))
        labels.append(torch.randint(CLASSES, (num_gts,), generator=g).to(device))
    points, strides = anchor_points(SIZES, STRIDES, device=device)
    to = lambda xs: [x.to(device) for x in xs]  # noqa: E731
    return dict(cls=to(cls), ctr=to(ctr), reg=to(reg), boxes=boxes, labels=labels, points=points, strides=strides)


def flat(prob: dict, requires_grad: bool):
    """(N, P, C) class-major logits, (N, P) centerness, (N, P, 4) distances, as a loss sees them."""
    cls = torch.cat([x.flatten(2) for x in prob["cls"]], 2).requires_grad_(requires_grad)
    ctr = torch.cat([x.flatten(1) for x in prob["ctr"]], 1).requires_grad_(requires_grad)
    reg = torch.cat([x.flatten(2) for x in prob["reg"]], 2).transpose(1, 2).contiguous().requires_grad_(requires_grad)
    return cls, ctr, reg


# ---- the measured functions --------------------------------------------------------------------

def fused_assign(prob: dict, backward: bool) -> None:
    cls, ctr, reg = flat(prob, backward)
    cls_npc = cls.transpose(1, 2)
    labels = torch.cat(prob["labels"])
    bag = dw_ops.candidate_bag_iou(prob["points"], prob["strides"], reg, prob["boxes"])
    score = dw_ops.pair_scores(bag, cls_npc, ctr, labels)
    w = dw_ops.dual_weights(bag, score, labels, cls_npc.shape[1], CLASSES)
    loss = dw_ops.neg_loss(cls_npc, ctr, w.neg_index, w.neg_prob) + (w.pos_weight * bag.giou_loss).sum()
    if backward:
        loss.backward()


def dense_assign(prob: dict, backward: bool) -> None:
    cls, ctr, reg = flat(prob, backward)
    cls_npc = cls.transpose(1, 2)
    out = reference.assign_and_neg_loss_dense(prob["points"], prob["strides"], reg, cls_npc, ctr, prob["boxes"],
                                              prob["labels"])
    loss = out.neg_loss + sum((w * b.giou_loss).sum() for w, b in zip(out.weights.pos_weight, out.bags))
    if backward:
        loss.backward()


def _cached(prob: dict, key: str, make: Callable):
    if key not in prob:
        prob[key] = make()
    return prob[key]


def _op_inputs(prob: dict, backward: bool):
    """Flat logits and distances made once per problem (the single-op cases time the op alone),
    with their gradients cleared, and the labels."""
    leaves = _cached(prob, f"flat{backward}", lambda: flat(prob, backward))
    for leaf in leaves:
        leaf.grad = None
    cls, ctr, reg = leaves
    return cls.transpose(1, 2), ctr, reg, torch.cat(prob["labels"])


def _assignment(prob: dict):
    """The fused bag and weights, and the dense bags and P_neg, made once per problem."""
    def make():
        cls, ctr, reg, labels = _op_inputs(prob, False)
        bag = dw_ops.candidate_bag_iou(prob["points"], prob["strides"], reg, prob["boxes"])
        weights = dw_ops.dual_weights(bag, dw_ops.pair_scores(bag, cls, ctr, labels), labels, cls.shape[1], CLASSES)
        dense_bags = reference.bag_iou_dense(prob["points"], prob["strides"], reg, prob["boxes"])
        dense = reference.dual_weights_dense(dense_bags, cls, ctr, prob["labels"])
        return bag, weights, dense_bags, dense.p_neg
    return _cached(prob, "assignment", make)


def fused_bag_iou(prob: dict, backward: bool) -> None:
    _, _, reg, _ = _op_inputs(prob, backward)
    bag = dw_ops.candidate_bag_iou(prob["points"], prob["strides"], reg, prob["boxes"])
    if backward:
        bag.giou_loss.sum().backward()


def dense_bag_iou(prob: dict, backward: bool) -> None:
    _, _, reg, _ = _op_inputs(prob, backward)
    bags = reference.bag_iou_dense(prob["points"], prob["strides"], reg, prob["boxes"])
    if backward:
        sum(bag.giou_loss[bag.inside].sum() for bag in bags).backward()


def fused_dual_weights(prob: dict, backward: bool) -> None:
    cls, ctr, _, labels = _op_inputs(prob, False)
    bag = _assignment(prob)[0]
    dw_ops.dual_weights(bag, dw_ops.pair_scores(bag, cls, ctr, labels), labels, cls.shape[1], CLASSES)


def dense_dual_weights(prob: dict, backward: bool) -> None:
    cls, ctr, _, _ = _op_inputs(prob, False)
    reference.dual_weights_dense(_assignment(prob)[2], cls, ctr, prob["labels"])


def fused_neg_loss(prob: dict, backward: bool) -> None:
    cls, ctr, _, _ = _op_inputs(prob, backward)
    weights = _assignment(prob)[1]
    loss = dw_ops.neg_loss(cls, ctr, weights.neg_index, weights.neg_prob)
    if backward:
        loss.backward()


def dense_neg_loss(prob: dict, backward: bool) -> None:
    cls, ctr, _, _ = _op_inputs(prob, backward)
    loss = reference.neg_loss_dense(cls, ctr, _assignment(prob)[3])
    if backward:
        loss.backward()


def _loss_inputs(prob: dict, backward: bool):
    leaves = [x.clone().requires_grad_(backward) for x in prob["cls"] + prob["reg"] + prob["ctr"]]
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(prob["boxes"], prob["labels"])]
    return leaves[:5], leaves[5:10], leaves[10:], targets


def fused_loss(prob: dict, backward: bool) -> None:
    out = DWLoss(CLASSES)(prepare_batch(*_loss_inputs(prob, backward), STRIDES))
    if backward:
        sum(out.values()).backward()


def dense_loss(prob: dict, backward: bool) -> None:
    out = reference.dw_loss_dense(*_loss_inputs(prob, backward), STRIDES)
    if backward:
        sum(out.values()).backward()


def _sample_inputs(prob: dict, backward: bool) -> list:
    """Per level: the (N, 4, H, W) box map and random (N, 8, H, W) offsets (made once per problem),
    with their gradients cleared like _op_inputs's."""
    def make():
        g = torch.Generator().manual_seed(1)
        return [(x.detach().clone().requires_grad_(backward),
                 (torch.randn(BATCH, 8, *x.shape[-2:], generator=g) * 2).to(x.device).requires_grad_(backward))
                for x in prob["reg"]]
    levels = _cached(prob, f"sample{backward}", make)
    for boxes, offsets in levels:
        boxes.grad = offsets.grad = None
    return levels


def _sample_with(fn: Callable) -> Callable:
    def run(prob: dict, backward: bool) -> None:
        total = sum(fn(b, o).sum() for b, o in _sample_inputs(prob, backward))
        if backward:
            total.backward()
    return run


CASES: Dict[str, Dict[str, Callable]] = {
    "bag_iou": {"fused": fused_bag_iou, "dense reference": dense_bag_iou},
    "dual_weights": {"fused": fused_dual_weights, "dense reference": dense_dual_weights},
    "neg_loss": {"fused": fused_neg_loss, "dense reference": dense_neg_loss},
    "assign": {"fused": fused_assign, "dense reference": dense_assign},
    "crowded": {"fused": fused_assign},
    "dw_loss": {"fused": fused_loss, "dense reference": dense_loss},
    "boundary_sample": {"fused": _sample_with(dw_ops.boundary_sample),
                        "deform_conv2d": _sample_with(reference.boundary_sample_deform_conv),
                        "dense reference": _sample_with(reference.boundary_sample_dense)},
}


FORWARD_ONLY = {"dual_weights"}  # detached weights: no backward


# ---- the assigner peer ------------------------------------------------------------------------------

PEER_GTS = [10, 100, 1000]
PEER_TOPK, PEER_ALPHA, PEER_BETA = 13, 1.0, 6.0  # Ultralytics' published TaskAlignedAssigner defaults


def load_peer():
    """Ultralytics' TaskAlignedAssigner class, or the reason it is not available (AGPL-3.0: an
    optional import of this benchmark only, never a dependency of the package)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.gettempdir())  # it writes a settings file at import
    os.environ.setdefault("YOLO_OFFLINE", "1")  # and probes the network (DNS) unless told it is offline
    try:
        from ultralytics.utils.tal import TaskAlignedAssigner
    except ImportError as err:
        return None, f"ultralytics is not installed ({err})"
    return TaskAlignedAssigner, None


def ours_task_aligned(prob: dict) -> int:
    """loss.type=tood's assignment from the head outputs: candidate bags with their IoU, joint
    scores, the task-aligned positives. Returns the number of positives."""
    with torch.no_grad():
        batch = prepare_batch(*_loss_inputs(prob, False), STRIDES)
        return assign_task_aligned(batch, topk=PEER_TOPK, alpha=PEER_ALPHA, beta=PEER_BETA).pairs.numel()


def ours_dw(prob: dict) -> int:
    """DW's assignment (bags, joint scores, dual weights). Returns the number of weighted pairs."""
    with torch.no_grad():
        return int((assign_dw(prepare_batch(*_loss_inputs(prob, False), STRIDES)).w_pos > 0).sum())


def ultralytics_task_aligned(prob: dict) -> int:
    """TaskAlignedAssigner on the same head outputs: the dense (N, P, C) joint scores and the
    decoded boxes it takes, and the GTs padded to (N, G, .) with their mask. Returns the number of
    positives."""
    assigner_class, reason = load_peer()
    if assigner_class is None:
        raise RuntimeError(reason)
    with torch.no_grad():
        cls, ctr, reg = flat(prob, False)
        scores = cls.transpose(1, 2).sigmoid() * ctr.sigmoid()[..., None]
        points = prob["points"]
        boxes = torch.cat([points - reg[..., :2], points + reg[..., 2:]], -1)
        gt_boxes = torch.nn.utils.rnn.pad_sequence(prob["boxes"], batch_first=True)
        gt_labels = torch.nn.utils.rnn.pad_sequence(prob["labels"], batch_first=True)[..., None]
        mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(b), 1, device=b.device) for b in prob["boxes"]],
                                               batch_first=True)
        assigner = assigner_class(topk=PEER_TOPK, num_classes=CLASSES, alpha=PEER_ALPHA, beta=PEER_BETA,
                                  stride=list(STRIDES))
        fg_mask = assigner(scores, boxes, points, gt_labels, gt_boxes, mask)[3]
        return int(fg_mask.sum())


PEERS: Dict[str, Callable[[dict], int]] = {"ours (tood)": ours_task_aligned, "ours (dw)": ours_dw,
                                           "ultralytics TaskAlignedAssigner": ultralytics_task_aligned}


def run_peer(device: str, gts: List[int], min_time: float, memory: bool, record: Callable[[dict], None]) -> dict:
    assigner_class, reason = load_peer()
    if assigner_class is None:
        print(f"--peer: skipped, {reason}", flush=True)
        return {"skipped": reason}
    peer = {"topk": PEER_TOPK, "alpha": PEER_ALPHA, "beta": PEER_BETA, "rows": []}
    for num_gts in gts:
        prob = make_problem(num_gts, device)
        for impl, fn in PEERS.items():
            positives = fn(prob)
            row = dict(gts=num_gts, impl=impl, positives=positives,
                       ms=median_ms(lambda p, _: fn(p), prob, False, min_time),
                       peak_mib=peak_extra_mib(("peer", impl), num_gts, device, prob) if memory else None)
            peer["rows"].append(row)
            record(peer)
            peak = f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""
            print(f"peer G={num_gts:<5} {impl:<32} {row['ms']:9.2f} ms{peak}, {positives} positives", flush=True)
    return peer


# ---- measurement -----------------------------------------------------------------------------------

def median_ms(fn: Callable, prob: dict, backward: bool, min_time: float) -> float:
    timer = tbench.Timer(stmt="fn(prob, backward)", globals=dict(fn=fn, prob=prob, backward=backward),
                         num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_time).median * 1e3


def _lookup(what: tuple) -> Callable:
    """("peer", impl) or (case, impl) -> a function of (prob, backward)."""
    if what[0] == "peer":
        return lambda prob, backward: PEERS[what[1]](prob)
    return CASES[what[0]][what[1]]


def _peak_worker(what: tuple, num_gts: int, queue) -> None:
    prob = make_problem(num_gts, "cpu")
    fn = _lookup(what)
    fn(prob, True)  # warm up (thread pools, lazy init) before the baseline is read
    with open("/proc/self/clear_refs", "w") as f:  # resets the RSS high-water mark (VmHWM)
        f.write("5")
    base = _status_kib("VmRSS")
    fn(prob, True)
    queue.put((_status_kib("VmHWM") - base) / 1024)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_extra_mib(what: tuple, num_gts: int, device: str, prob: Optional[dict] = None) -> float:
    """Peak memory of one forward+backward of ``what`` ((case, impl) or ("peer", impl)) above what
    its inputs take. On CUDA in this process, on ``prob``. On CPU in a fresh process, which maps
    every large allocation (MALLOC_MMAP_THRESHOLD_) so that freed memory leaves the RSS and the
    high-water mark counts what the call itself needs."""
    if device == "cuda":
        fn = _lookup(what)
        fn(prob, True)  # warm up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(prob, True)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 16)  # inherited by the spawned interpreter
    proc = ctx.Process(target=_peak_worker, args=(what, num_gts, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return value


def syncs_and_launches(fn: Callable, prob: dict, backward: bool) -> tuple:
    """(host synchronisations, GPU activities) of one call on CUDA: what limits a small op there."""
    fn(prob, backward)  # warm up: lazy initialisations may synchronise once
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(prob, backward)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    try:  # the profiler needs CUPTI: a machine without it still gets the other figures
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn(prob, backward)
            torch.cuda.synchronize()
        launches = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except RuntimeError as err:
        print(f"no launch count ({err})", flush=True)
        launches = None
    return syncs, launches


def case_gts(case: str, gts: List[int]) -> List[int]:
    """The GT counts a case runs at: --gts, except for the crowded scene and for boundary_sample
    (whose inputs do not depend on the GTs)."""
    if case == "crowded":
        return [CROWDED_GTS]
    return gts[:1] if case == "boundary_sample" else gts


def run(device: str, gts: List[int], min_time: float, memory: bool, cases: List[str] = list(CASES),
        record: Callable[[list], None] = lambda rows: None) -> List[dict]:
    rows = []
    for case in cases:
        impls = CASES[case]
        for num_gts in case_gts(case, gts):
            prob = make_problem(num_gts, device)
            for backward in (False, True) if case not in FORWARD_ONLY else (False,):
                times = {impl: median_ms(fn, prob, backward, min_time) for impl, fn in impls.items()}
                row = dict(case=case, gts=num_gts if case != "boundary_sample" else None,
                           mode="fwd+bwd" if backward else "fwd", ms=times)
                if (backward or case in FORWARD_ONLY) and memory:
                    row["peak_extra_mib"] = {impl: peak_extra_mib((case, impl), num_gts, device, prob)
                                             for impl in impls}
                if device == "cuda":
                    row["syncs"], row["launches"] = syncs_and_launches(impls["fused"], prob, backward)
                rows.append(row)
                record(rows)
                print(_format_row(row), flush=True)
    return rows


def _format_row(row: dict) -> str:
    fused = row["ms"]["fused"]
    parts = [f"{row['case']:<16}", f"G={row['gts'] or '-':<4}", f"{row['mode']:<8}"]
    for impl, ms in row["ms"].items():
        ratio = "" if impl == "fused" else f" ({ms / fused:.1f}x)"
        parts.append(f"{impl} {ms:9.2f} ms{ratio}")
    for impl, mib in row.get("peak_extra_mib", {}).items():
        parts.append(f"peak {impl} {mib:.0f} MiB")
    if "syncs" in row:
        parts.append(f"{row['syncs']} syncs, {row['launches']} GPU activities")
    return " | ".join(parts)


def steady_state_allocator() -> bool:
    """Keep freed large blocks in glibc's heap, as a long training process (whose activations keep
    the malloc thresholds at their maximum) does: otherwise whether each case's (N, P, C) buffers
    come back as fresh, page-faulting mmaps depends on what ran before, by up to ~15 ms a call
    here. Returns False where glibc's mallopt is not available (the timings then vary more)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gts", type=int, nargs="+", default=[10, 50, 100], help="GTs per image")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of measurement per timing")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--cases", nargs="*", choices=list(CASES), default=list(CASES),
                        help="what to measure (none: only the --peer comparison)")
    parser.add_argument("--peer", action="store_true", help="also compare with Ultralytics' TaskAlignedAssigner")
    parser.add_argument("--peer-gts", type=int, nargs="+", default=PEER_GTS, help="GTs per image of --peer")
    parser.add_argument("--json", help="write the results here (after every row)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no GPU is visible")
    steady = args.device == "cpu" and steady_state_allocator()
    device = describe_device(args.device)
    print(f"device: {device}; dw_ops build: {dw_ops.build_info()}; steady-state allocator: {steady}")
    results = {"device": device, "environment": environment_record(),
               "command": " ".join(["python", "tools/bench_ops.py"] + (sys.argv[1:] if argv is None else argv)),
               "rows": []}

    def record(key: str, value) -> None:
        results[key] = value
        if args.json:
            write_json(results, args.json, indent=1)

    run(args.device, args.gts, args.min_time, not args.no_memory, args.cases, lambda rows: record("rows", rows))
    if args.peer:
        record("peer", run_peer(args.device, args.peer_gts, args.min_time, not args.no_memory,
                                lambda peer: record("peer", peer)))


if __name__ == "__main__":
    main()
