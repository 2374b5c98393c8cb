// CPU reference of the mask-pasting op: the same per-pixel functions as the CUDA kernel
// (paste_masks.h), one detection per task. It exists so that the kernel's arithmetic can be
// checked against the pure-PyTorch path on machines without a GPU (csrc/compile_check.py,
// tests/layers/test_mask_paste_cuda.py); paste_masks_in_image(impl="auto") keeps the
// pure-PyTorch path for CPU tensors.
#include "paste_masks.h"

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

namespace maskrcnn {
namespace paste_masks {

void check_paste_inputs(const at::Tensor& masks, const at::Tensor& boxes) {
  TORCH_CHECK(masks.dim() == 3, "masks must be (N, Mh, Mw), got ", masks.sizes());
  TORCH_CHECK(at::isFloatingType(masks.scalar_type()), "masks must be floating, got ",
              masks.scalar_type());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4 && boxes.size(0) == masks.size(0),
              "boxes must be (N, 4) with N = ", masks.size(0), ", got ", boxes.sizes());
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), "boxes must be floating");
  TORCH_CHECK(boxes.device() == masks.device(), "masks and boxes must be on the same device");
}

at::Tensor packed_offsets(const at::Tensor& masks, const at::Tensor& windows) {
  TORCH_CHECK(windows.device().is_cpu() && windows.scalar_type() == at::kLong,
              "windows must be a CPU int64 tensor");
  TORCH_CHECK(windows.dim() == 2 && windows.size(1) == 4 && windows.size(0) == masks.size(0),
              "windows must be (N, 4), got ", windows.sizes());
  const auto win = windows.contiguous();
  const int64_t* w = win.data_ptr<int64_t>();
  const int64_t n = win.size(0);
  auto offsets = at::empty({n + 1}, windows.options());
  int64_t* off = offsets.data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t y0 = w[4 * k], y1 = w[4 * k + 1], x0 = w[4 * k + 2], x1 = w[4 * k + 3];
    TORCH_CHECK(0 <= y0 && y0 <= y1 && 0 <= x0 && x0 <= x1, "bad window ", k);
    off[k + 1] = off[k] + (y1 - y0) * (x1 - x0);
  }
  return offsets;
}

namespace {

// Taps of pixels begin..end-1 along one axis.
std::vector<Tap> axis_taps(int64_t begin, int64_t end, double lo, double hi, int64_t m) {
  const double scale = axis_scale(lo, hi, m);
  std::vector<Tap> taps;
  taps.reserve(end - begin);
  for (int64_t p = begin; p < end; ++p) taps.push_back(axis_tap(p, lo, scale, m));
  return taps;
}

}  // namespace

at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                           int64_t width, double threshold) {
  check_paste_inputs(masks, boxes);
  TORCH_CHECK(height >= 0 && width >= 0, "bad image size");
  const auto m = masks.contiguous();
  const auto b = boxes.to(at::kDouble).contiguous();
  const int64_t n = m.size(0), mh = m.size(1), mw = m.size(2);
  auto out = at::zeros({n, height, width}, m.options().dtype(at::kBool));
  const float thr = static_cast<float>(threshold);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_cpu", [&] {
    const scalar_t* mp = m.data_ptr<scalar_t>();
    const double* bp = b.data_ptr<double>();
    bool* op = out.data_ptr<bool>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const double* box = bp + 4 * k;
        Window win;
        if (!box_window(box, height, width, &win)) continue;
        const auto ty = axis_taps(win.y0, win.y1, box[1], box[3], mh);
        const auto tx = axis_taps(win.x0, win.x1, box[0], box[2], mw);
        const scalar_t* mask = mp + k * mh * mw;
        bool* dst = op + k * height * width;
        for (int64_t y = win.y0; y < win.y1; ++y) {
          for (int64_t x = win.x0; x < win.x1; ++x) {
            dst[y * width + x] = pixel_value(mask, mh, mw, ty[y - win.y0], tx[x - win.x0]) >= thr;
          }
        }
      }
    });
  });
  return out;
}

at::Tensor paste_masks_packed_cpu(const at::Tensor& masks, const at::Tensor& boxes,
                                  const at::Tensor& windows, double threshold) {
  check_paste_inputs(masks, boxes);
  const auto offsets = packed_offsets(masks, windows);
  const auto m = masks.contiguous();
  const auto b = boxes.to(at::kDouble).contiguous();
  const auto win = windows.contiguous();
  const int64_t n = m.size(0), mh = m.size(1), mw = m.size(2);
  const int64_t* off = offsets.data_ptr<int64_t>();
  auto out = at::empty({off[n]}, m.options().dtype(at::kBool));
  const float thr = static_cast<float>(threshold);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_packed_cpu", [&] {
    const scalar_t* mp = m.data_ptr<scalar_t>();
    const double* bp = b.data_ptr<double>();
    const int64_t* wp = win.data_ptr<int64_t>();
    bool* op = out.data_ptr<bool>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const double* box = bp + 4 * k;
        const int64_t y0 = wp[4 * k], y1 = wp[4 * k + 1], x0 = wp[4 * k + 2], x1 = wp[4 * k + 3];
        const auto ty = axis_taps(y0, y1, box[1], box[3], mh);
        const auto tx = axis_taps(x0, x1, box[0], box[2], mw);
        const scalar_t* mask = mp + k * mh * mw;
        bool* dst = op + off[k];
        for (int64_t x = x0; x < x1; ++x) {
          for (int64_t y = y0; y < y1; ++y) {
            *dst++ = pixel_value(mask, mh, mw, ty[y - y0], tx[x - x0]) >= thr;
          }
        }
      }
    });
  });
  return out;
}

TORCH_LIBRARY_IMPL(maskrcnn_ops, CPU, m) {
  m.impl("paste_masks", &paste_masks_cpu);
  m.impl("paste_masks_packed", &paste_masks_packed_cpu);
}

}  // namespace paste_masks
}  // namespace maskrcnn
