"""The loss seam: the prepared batch, the one Assignment every assigner returns, each loss's table-1
classification weights against its own loss term, and a new assigner written as one function."""
import math

import pytest
import torch

from dwdet.losses import (LOSSES, Assignment, ATSSLoss, Batch, GFLLoss, assign_atss, assign_dw, assign_fcos,
                          assign_task_aligned, prepare_batch)
from dwdet.losses.common import candidate_bags, hard_assignment, one_gt_per_point, rank_in_group
from dwdet.models import build_fcos
from test_assigners import STRIDES, random_batch

ASSIGNERS = {"fcos": assign_fcos, "atss": assign_atss, "tood": assign_task_aligned, "dw": assign_dw}


def prepared(seed=0, gts=(25, 0, 10), dtype=torch.float64):
    cls, reg, obj, targets = random_batch(seed, gts, dtype=dtype)
    return prepare_batch(cls, reg, obj, targets, STRIDES)


# ---- the prepared batch ------------------------------------------------------------------------

def test_prepare_batch_flattens_the_levels_in_point_order():
    cls, reg, obj, targets = random_batch(0)
    batch = prepare_batch(cls, reg, obj, targets, STRIDES)
    assert batch.level_strides == STRIDES and batch.level_shapes == tuple(tuple(x.shape[-2:]) for x in cls)
    # point 0 of level 1 follows every point of level 0; its stride and coordinates are level 1's
    first = cls[0].shape[-2] * cls[0].shape[-1]
    assert batch.strides[first] == 16 and batch.points[first].tolist() == [8.0, 8.0]
    assert torch.equal(batch.cls[2, first], cls[1][2, :, 0, 0]) and batch.objectness[1, first] == obj[1][1, 0, 0, 0]
    assert torch.equal(batch.dist[0, first + 1], reg[1][0, :, 0, 1])
    assert torch.equal(batch.gt_boxes, torch.cat([t["boxes"] for t in targets]))
    per_point = batch.per_point([1, 2, 3, 4, 5])
    assert torch.equal(per_point[[0, first - 1, first]], torch.tensor([1.0, 1, 2], dtype=torch.float64))


def test_prepare_batch_computes_half_precision_outputs_in_float32():
    cls, reg, obj, targets = random_batch(1, dtype=torch.float32)
    batch = prepare_batch([x.half() for x in cls], [x.bfloat16() for x in reg], [x.half() for x in obj], targets,
                          STRIDES)
    assert {batch.cls.dtype, batch.dist.dtype, batch.objectness.dtype, batch.points.dtype} == {torch.float32}


def test_prepare_batch_checks_the_targets_once_with_clear_messages():
    cls, reg, obj, targets = random_batch(2)
    bad = [dict(t) for t in targets]
    bad[0]["labels"] = bad[0]["labels"].int()
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be an int64"):
        prepare_batch(cls, reg, obj, bad, STRIDES)
    bad[0] = {"boxes": targets[0]["boxes"][:, :3], "labels": targets[0]["labels"]}
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be a float \(G, 4\) tensor"):
        prepare_batch(cls, reg, obj, bad, STRIDES)
    with pytest.raises(ValueError, match=r"expected 4 levels \(strides \(8, 16, 32, 64\)\)"):
        prepare_batch(cls, reg, obj, targets, STRIDES[:4])


def test_the_detector_hands_the_loss_its_head_strides():
    seen = []

    class Recorder(GFLLoss):
        def forward(self, batch):
            seen.append(batch)
            return super().forward(batch)

    model = build_fcos(3, Recorder(3), backbone="resnet18", backbone_weights=None, backbone_norm="gn", channels=64,
                       min_size=64, max_size=96).train()
    model.head.strides = (4, 8, 16, 32, 64)  # a head of other strides: the loss follows it
    out = model([torch.rand(3, 64, 80)], [{"boxes": torch.tensor([[4.0, 8, 40, 50]]), "labels": torch.tensor([2])}])
    assert all(math.isfinite(float(v.detach())) for v in out.values())
    (batch,) = seen
    assert batch.level_strides == (4, 8, 16, 32, 64) and batch.strides[0] == 4 and batch.points[0].tolist() == [2, 2]
    assert batch.cls.dtype == torch.float32


# ---- one Assignment for every assigner ---------------------------------------------------------

@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_every_assigner_returns_the_one_assignment(name):
    batch = prepared(3)
    a = ASSIGNERS[name](batch)
    assert isinstance(a, Assignment)
    k = len(a.pairs)
    assert k > 0 and a.w_pos.shape == a.target.shape == (k,) and a.neg_index.shape == a.w_neg.shape
    assert torch.equal(a.pairs, a.pairs.sort().values) and len(a.pairs.unique()) == k
    assert torch.equal(a.neg_index, a.neg_index.unique())  # unique, ascending
    entries = (a.bag.image_index[a.pairs] * batch.num_points + a.bag.point_index[a.pairs]) * batch.num_classes \
        + batch.labels[a.bag.gt_index[a.pairs]]
    assert set(entries.tolist()) <= set(a.neg_index.tolist())  # the pairs' entries have their own negative weight
    assert not a.w_pos.requires_grad and not a.w_neg.requires_grad and not a.target.requires_grad
    if name == "dw":  # every bag pair, with its dual weights
        assert k == len(a.bag.gt_index) and (a.w_neg >= 0).all() and (a.w_neg <= 1).all()
    else:  # hard positives: one GT per point, weight 1, no negative term at their entries
        assert len(entries.unique()) == k and (a.w_pos == 1).all() and (a.w_neg == 0).all()
        assert (a.target == 1).all() if name != "tood" else ((a.target > 0) & (a.target <= 1)).all()


# ---- table 1's weights are each loss's own classification term ---------------------------------

def _classification_term(name, loss, batch, a, out):
    """The loss's classification term(s) times their normalisers: what the weights must sum to."""
    num_pos = max(len(a.pairs), 1)
    if name == "dw":
        num_gts = max(len(batch.labels), 1)
        neg_norm = max(float((1 - a.w_neg).sum()), 1.0)
        return out["loss_cls_pos"] * num_gts / loss.pos_reweight + out["loss_cls_neg"] * neg_norm / loss.neg_scale
    if name == "tood":
        return out["loss_cls"] * max(float(a.target.sum()), 1.0)
    return out["loss_cls"] * num_pos


@pytest.mark.parametrize("name", ["fcos", "atss", "gfl", "vfl", "tood", "tood_warmup", "dw", "dw_paper", "dw_pneg",
                                  "dw_one_minus_wpos"])
def test_classification_weights_sum_to_the_loss_term(name):
    options = {"dw_paper": {"variant": "paper"}, "dw_pneg": {"neg_weighting": "pneg"},
               "dw_one_minus_wpos": {"neg_weighting": "one_minus_wpos"}}.get(name, {})
    kind = name.split("_")[0]
    loss = LOSSES[kind](4, **options)
    if kind == "tood":
        loss.set_epoch(0 if name == "tood_warmup" else 10)
    batch = prepared(4)
    a = loss.assign(batch)
    out = loss.terms(batch, a)
    w = loss.classification_weights(batch, a)
    image, point, label = a.entries(batch.labels)
    s = w.score
    total = (w.w_pos * -torch.log(s[image, point, label])).sum() + (w.w_neg * -torch.log1p(-s)).sum()
    torch.testing.assert_close(total, _classification_term(kind, loss, batch, a, out), rtol=1e-9, atol=0)


# ---- an eighth assigner is one function ---------------------------------------------------------

def assign_nearest(batch: Batch) -> Assignment:
    """Each GT's one bag point nearest its centre; a point nearest for several GTs goes to the nearer."""
    bag = candidate_bags(batch)
    centers = (batch.gt_boxes[:, :2] + batch.gt_boxes[:, 2:]) / 2
    distance = (batch.points[bag.point_index] - centers[bag.gt_index]).norm(dim=1)
    pairs = (rank_in_group(bag.gt_index, distance) == 0).nonzero().squeeze(1)
    entry = bag.image_index[pairs] * batch.num_points + bag.point_index[pairs]
    return hard_assignment(batch, bag, pairs[one_gt_per_point(entry, -distance[pairs], bag.gt_index[pairs])])


def test_a_new_assigner_picks_what_it_says():
    # one 4 x 4 level of stride 8: the GT (10, 2, 30, 20) has centre (20, 11), nearest point (20, 12) = index 6
    boxes = torch.tensor([[10.0, 2.0, 30.0, 20.0]], dtype=torch.float64)
    maps = [torch.zeros(1, 2, 4, 4, dtype=torch.float64)], [torch.ones(1, 4, 4, 4, dtype=torch.float64)], \
        [torch.zeros(1, 1, 4, 4, dtype=torch.float64)]
    batch = prepare_batch(*maps, [{"boxes": boxes, "labels": torch.tensor([1])}], (8,))
    a = assign_nearest(batch)
    assert a.bag.point_index[a.pairs].tolist() == [6] and a.neg_index.tolist() == [6 * 2 + 1]


@pytest.mark.parametrize("kind", ["atss", "gfl", "vfl", "tood"])
def test_a_new_assigner_trains_through_the_common_terms(kind):
    loss = LOSSES[kind](4)
    cls, reg, obj, targets = random_batch(5)
    leaves = [x.clone().requires_grad_() for x in cls + reg + obj]
    batch = prepare_batch(leaves[:5], leaves[5:10], leaves[10:], targets, STRIDES)
    out = loss.terms(batch, assign_nearest(batch))
    assert all(math.isfinite(float(v.detach())) and float(v.detach()) > 0 for v in out.values())
    grads = torch.autograd.grad(sum(out.values()), leaves, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:10])  # class logits and distances


def test_a_detector_trains_with_a_new_assigner():
    class NearestATSS(ATSSLoss):  # ATSS's loss terms on the new assignment
        def assign(self, batch):
            return assign_nearest(batch)

    torch.manual_seed(0)
    model = build_fcos(3, NearestATSS(3), backbone="resnet18", backbone_weights=None, channels=64, min_size=64,
                       max_size=64).train()
    image = torch.rand(3, 64, 64) * 0.2
    image[:, 13:40, 7:33] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
    image[:, 33:60, 37:57] = torch.tensor([0.1, 0.3, 0.9]).view(3, 1, 1)
    targets = [{"boxes": torch.tensor([[7.0, 13, 33, 40], [37, 33, 57, 60]]), "labels": torch.tensor([0, 1])}]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(10):
        loss = sum(model([image], targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0]
