// Argument checks shared by the CPU and CUDA implementations: every op rejects a wrong shape,
// dtype or device with a message that names the argument, before any kernel touches memory.
// Index values (the check_*_values functions) are checked here by the CPU ops only: on a GPU,
// reading them would synchronise the stream, so the CUDA kernels check them where they read them
// (DW_CHECK_INDEX in cuda/device.cuh).
#pragma once

#include "common/aten.h"

#include <string>
#include <vector>

namespace dw_ops {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + ")";
}

inline void check_dim(const at::Tensor& t, const char* name, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, name, " must have shape ", layout, ", got ", shape_str(t));
}

inline void check_size(const at::Tensor& t, const char* name, int64_t d, int64_t expected,
                       const char* layout) {
  TORCH_CHECK(t.size(d) == expected, name, " must have shape ", layout, " with size ", expected,
              " in dim ", d, ", got ", shape_str(t));
}

inline void check_float(const at::Tensor& t, const char* name, bool allow_half) {
  const auto st = t.scalar_type();
  const bool ok = st == at::kFloat || st == at::kDouble ||
                  (allow_half && (st == at::kHalf || st == at::kBFloat16));
  TORCH_CHECK(ok, name, " must be ", allow_half ? "float16, bfloat16, float32 or float64" : "float32 or float64",
              ", got ", st);
}

inline void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, name, " must be 1-D, got ", shape_str(t));
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), b_name, " must have the dtype of ", a_name, " (",
              a.scalar_type(), "), got ", b.scalar_type());
}

inline void check_same_device(const std::vector<std::pair<const at::Tensor*, const char*>>& ts) {
  const auto& first = *ts.front().first;
  for (const auto& [t, name] : ts) {
    TORCH_CHECK(t->device() == first.device(), name, " is on ", t->device(), " but ", ts.front().second,
                " is on ", first.device(), "; all inputs must be on one device");
  }
}

// Index values are checked too: an out-of-range index would otherwise read or write out of bounds.
inline void check_index_range(const at::Tensor& idx, int64_t upper, const char* name, const char* what) {
  if (idx.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(idx);
  const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
  TORCH_CHECK(lo_v >= 0 && hi_v < upper, name, " must index ", what, " in [0, ", upper, "), got values in [",
              lo_v, ", ", hi_v, "]");
}

// ---- per-op checks ----------------------------------------------------------------------------

inline void check_bag_pairs(const at::Tensor& points, const at::Tensor& gt_boxes) {
  check_dim(points, "points", 2, "(P, 2)");
  check_size(points, "points", 1, 2, "(P, 2)");
  check_dim(gt_boxes, "gt_boxes", 2, "(M, 4)");
  check_size(gt_boxes, "gt_boxes", 1, 4, "(M, 4)");
  check_float(points, "points", false);
  check_same_dtype(points, "points", gt_boxes, "gt_boxes");
  check_same_device({{&points, "points"}, {&gt_boxes, "gt_boxes"}});
}

// The arguments bag_iou and _bag_iou_backward share.
inline void check_bag_iou_pairs(const at::Tensor& points, const at::Tensor& distances, const at::Tensor& gt_boxes,
                                const at::Tensor& gt_image, const at::Tensor& pair_gt, const at::Tensor& pair_point) {
  check_bag_pairs(points, gt_boxes);
  const int64_t P = points.size(0), M = gt_boxes.size(0);
  check_dim(distances, "distances", 3, "(N, P, 4)");
  check_size(distances, "distances", 1, P, "(N, P, 4) with P = points.size(0)");
  check_size(distances, "distances", 2, 4, "(N, P, 4)");
  check_same_dtype(points, "points", distances, "distances");
  check_index(gt_image, "gt_image");
  check_size(gt_image, "gt_image", 0, M, "(M,) with M = gt_boxes.size(0)");
  check_index(pair_gt, "pair_gt");
  check_index(pair_point, "pair_point");
  TORCH_CHECK(pair_gt.numel() == pair_point.numel(), "pair_gt and pair_point must have the same length, got ",
              pair_gt.numel(), " and ", pair_point.numel());
  check_same_device({{&points, "points"}, {&distances, "distances"}, {&gt_boxes, "gt_boxes"},
                     {&gt_image, "gt_image"}, {&pair_gt, "pair_gt"}, {&pair_point, "pair_point"}});
}

inline void check_bag_iou(const at::Tensor& points, const at::Tensor& strides, const at::Tensor& distances,
                          const at::Tensor& gt_boxes, const at::Tensor& gt_image, const at::Tensor& pair_gt,
                          const at::Tensor& pair_point) {
  check_bag_iou_pairs(points, distances, gt_boxes, gt_image, pair_gt, pair_point);
  check_dim(strides, "strides", 1, "(P,)");
  check_size(strides, "strides", 0, points.size(0), "(P,) with P = points.size(0)");
  check_same_dtype(points, "points", strides, "strides");
  check_same_device({{&points, "points"}, {&strides, "strides"}});
}

inline void check_bag_iou_values(const at::Tensor& points, const at::Tensor& distances, const at::Tensor& gt_boxes,
                                 const at::Tensor& gt_image, const at::Tensor& pair_gt, const at::Tensor& pair_point) {
  check_index_range(gt_image, distances.size(0), "gt_image", "images of distances");
  check_index_range(pair_gt, gt_boxes.size(0), "pair_gt", "rows of gt_boxes");
  check_index_range(pair_point, points.size(0), "pair_point", "points");
}

inline void check_dual_weights(const at::Tensor& score, const at::Tensor& iou, const at::Tensor& giou_loss,
                               const at::Tensor& prior, const at::Tensor& gt_pair_offsets) {
  const int64_t K = score.numel();
  for (const auto& [t, name] : std::vector<std::pair<const at::Tensor*, const char*>>{
           {&score, "score"}, {&iou, "iou"}, {&giou_loss, "giou_loss"}, {&prior, "prior"}}) {
    check_dim(*t, name, 1, "(K,)");
    check_float(*t, name, false);
    check_same_dtype(score, "score", *t, name);
    TORCH_CHECK(t->numel() == K, name, " must have K = ", K, " elements (one per bag pair), got ", t->numel());
  }
  check_index(gt_pair_offsets, "gt_pair_offsets");
  TORCH_CHECK(gt_pair_offsets.numel() >= 1, "gt_pair_offsets must have M + 1 >= 1 elements");
  check_same_device({{&score, "score"}, {&iou, "iou"}, {&giou_loss, "giou_loss"}, {&prior, "prior"},
                     {&gt_pair_offsets, "gt_pair_offsets"}});
}

inline void check_dual_weights_values(const at::Tensor& score, const at::Tensor& gt_pair_offsets) {
  const int64_t K = score.numel();
  const auto offsets = gt_pair_offsets.cpu();
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t M = offsets.numel() - 1;
  TORCH_CHECK(o[0] == 0 && o[M] == K, "gt_pair_offsets must start at 0 and end at K = ", K, ", got ", o[0],
              " and ", o[M]);
  for (int64_t g = 0; g < M; ++g) {
    TORCH_CHECK(o[g + 1] >= o[g], "gt_pair_offsets must be non-decreasing, but offsets[", g + 1, "] = ",
                o[g + 1], " < offsets[", g, "] = ", o[g]);
  }
}

inline void check_neg_loss(const at::Tensor& cls_logits, const at::Tensor& ctr_logits,
                           const at::Tensor& entry_index, const at::Tensor& entry_weight) {
  check_dim(cls_logits, "cls_logits", 3, "(N, P, C)");
  check_dim(ctr_logits, "ctr_logits", 2, "(N, P)");
  check_size(ctr_logits, "ctr_logits", 0, cls_logits.size(0), "(N, P) matching cls_logits (N, P, C)");
  check_size(ctr_logits, "ctr_logits", 1, cls_logits.size(1), "(N, P) matching cls_logits (N, P, C)");
  check_float(cls_logits, "cls_logits", true);
  check_same_dtype(cls_logits, "cls_logits", ctr_logits, "ctr_logits");
  check_index(entry_index, "entry_index");
  check_dim(entry_weight, "entry_weight", 1, "(U,)");
  check_float(entry_weight, "entry_weight", false);
  TORCH_CHECK(entry_weight.numel() == entry_index.numel(), "entry_weight must have one value per entry_index (",
              entry_index.numel(), "), got ", entry_weight.numel());
  check_same_device({{&cls_logits, "cls_logits"}, {&ctr_logits, "ctr_logits"}, {&entry_index, "entry_index"},
                     {&entry_weight, "entry_weight"}});
}

inline void check_neg_loss_values(const at::Tensor& cls_logits, const at::Tensor& entry_index) {
  check_index_range(entry_index, cls_logits.numel(), "entry_index", "flat (N * P * C) entries of cls_logits");
  // A repeated entry would be corrected twice in the loss but once in the gradient.
  if (entry_index.numel() > 1) {
    TORCH_CHECK((entry_index.narrow(0, 1, entry_index.numel() - 1) > entry_index.narrow(0, 0, entry_index.numel() - 1))
                    .all()
                    .item<bool>(),
                "entry_index must be strictly increasing (unique sorted entries, as dw_ops.merge_entries returns)");
  }
}

inline void check_boundary_sample(const at::Tensor& boxes, const at::Tensor& offsets) {
  check_dim(boxes, "boxes", 4, "(N, 4, H, W)");
  check_size(boxes, "boxes", 1, 4, "(N, 4, H, W)");
  check_dim(offsets, "offsets", 4, "(N, 8, H, W)");
  check_size(offsets, "offsets", 1, 8, "(N, 8, H, W)");
  TORCH_CHECK(offsets.size(0) == boxes.size(0) && offsets.size(2) == boxes.size(2) &&
                  offsets.size(3) == boxes.size(3),
              "offsets must have shape (N, 8, H, W) matching boxes ", shape_str(boxes), ", got ",
              shape_str(offsets));
  check_float(boxes, "boxes", true);
  check_same_dtype(boxes, "boxes", offsets, "offsets");
  check_same_device({{&boxes, "boxes"}, {&offsets, "offsets"}});
}

}  // namespace dw_ops
