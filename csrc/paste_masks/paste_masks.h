// Mask pasting: the per-pixel arithmetic shared by the CPU reference and the CUDA kernel.
//
// The pasting rule is written once, at the top of maskrcnn/layers/mask_ops.py. The functions
// below reproduce, operation for operation, the pure-PyTorch evaluation in
// maskrcnn/layers/mask_window.py, so that every implementation gives bit-identical values (and
// hence identical thresholded masks, ties included):
//
//   scale = M / (hi - lo)                                    (float64)
//   s     = ((p + 0.5) - lo) * scale - 0.5                   (float64, one rounding per op)
//   s     = NaN -> -2, then clamped to [-2, M]               (only cases where no tap is inside)
//   j0    = floor(s), f = s - j0, w0 = float(1 - f), w1 = float(f)
//   c(j)  = m[i0, j] * wy0 + m[i0 + 1, j] * wy1               (float32; taps outside the grid
//   v     = c(j0) * wx0 + c(j0 + 1) * wx1                     read 0, columns outside give 0)
//   mask  = v >= float(threshold)
//
// Every product and sum is rounded on its own: no fused multiply-add. Device code uses the
// __*_rn intrinsics (which nvcc never contracts); host code is compiled with -ffp-contract=off.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace maskrcnn {
namespace paste_masks {

C10_HOST_DEVICE inline float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

C10_HOST_DEVICE inline float fadd_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

C10_HOST_DEVICE inline double dadd_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

C10_HOST_DEVICE inline double dsub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

C10_HOST_DEVICE inline double dmul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

C10_HOST_DEVICE inline double ddiv_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

// False for +-inf and NaN (inf - inf and NaN - NaN are NaN, which compares unequal to 0).
C10_HOST_DEVICE inline bool is_finite(double v) { return dsub_rn(v, v) == 0.0; }

// Box-local window [y0, y1) x [x0, x1) of the image, end exclusive.
struct Window {
  int64_t y0, y1, x0, x1;
};

// One axis of the window: floor(lo) - 1 <= p < ceil(hi) + 1, clipped to [0, size).
// Returns false when the clipped range is empty.
C10_HOST_DEVICE inline bool axis_range(double lo, double hi, int64_t size, int64_t* begin,
                                       int64_t* end) {
  const double fsize = static_cast<double>(size);
  double b = floor(lo) - 1.0;
  double e = ceil(hi) + 1.0;
  b = b < 0.0 ? 0.0 : (b > fsize ? fsize : b);
  e = e < 0.0 ? 0.0 : (e > fsize ? fsize : e);
  if (!(e > b)) return false;
  *begin = static_cast<int64_t>(b);
  *end = static_cast<int64_t>(e);
  return true;
}

// The window of box (x1, y1, x2, y2); false for non-finite or empty boxes and empty windows.
C10_HOST_DEVICE inline bool box_window(const double* box, int64_t height, int64_t width,
                                       Window* win) {
  const double x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3];
  if (!(is_finite(x1) && is_finite(y1) && is_finite(x2) && is_finite(y2))) return false;
  if (!(x2 > x1) || !(y2 > y1)) return false;
  return axis_range(x1, x2, width, &win->x0, &win->x1) &&
         axis_range(y1, y2, height, &win->y0, &win->y1);
}

// Grid cells per pixel along one axis: M / (hi - lo), float64.
C10_HOST_DEVICE inline double axis_scale(double lo, double hi, int64_t m) {
  return ddiv_rn(static_cast<double>(m), dsub_rn(hi, lo));
}

// The two bilinear taps of pixel p along one axis: grid indices j0 and j0 + 1, weights w0, w1.
struct Tap {
  int64_t j0;
  float w0, w1;
};

C10_HOST_DEVICE inline Tap axis_tap(int64_t p, double lo, double scale, int64_t m) {
  double s = dsub_rn(dmul_rn(dsub_rn(dadd_rn(static_cast<double>(p), 0.5), lo), scale), 0.5);
  // Clamping to [-2, M] changes nothing that matters: outside it both taps are off the grid.
  if (!(s >= -2.0)) s = -2.0;  // also NaN
  if (s > static_cast<double>(m)) s = static_cast<double>(m);
  const double j0 = floor(s);
  const double f = dsub_rn(s, j0);
  return Tap{static_cast<int64_t>(j0), static_cast<float>(dsub_rn(1.0, f)), static_cast<float>(f)};
}

// Grid column j interpolated along y at the rows of tap ty; 0 when j is off the grid.
template <typename T>
C10_HOST_DEVICE inline float column_value(const T* mask, int64_t mh, int64_t mw, const Tap& ty,
                                          int64_t j) {
  if (j < 0 || j >= mw) return 0.f;
  const int64_t i0 = ty.j0, i1 = ty.j0 + 1;
  const float a = (i0 >= 0 && i0 < mh) ? static_cast<float>(mask[i0 * mw + j]) : 0.f;
  const float b = (i1 >= 0 && i1 < mh) ? static_cast<float>(mask[i1 * mw + j]) : 0.f;
  return fadd_rn(fmul_rn(a, ty.w0), fmul_rn(b, ty.w1));
}

// Bilinear value of the (mh, mw) grid at the pixel whose taps are ty (rows) and tx (columns).
template <typename T>
C10_HOST_DEVICE inline float pixel_value(const T* mask, int64_t mh, int64_t mw, const Tap& ty,
                                         const Tap& tx) {
  const float c0 = column_value(mask, mh, mw, ty, tx.j0);
  const float c1 = column_value(mask, mh, mw, ty, tx.j0 + 1);
  return fadd_rn(fmul_rn(c0, tx.w0), fmul_rn(c1, tx.w1));
}

// Host-side entry points (schemas in csrc/register.cpp).

// masks (N, Mh, Mw) floating, boxes (N, 4) xyxy -> (N, height, width) bool.
at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                           int64_t width, double threshold);
at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                            int64_t width, double threshold);

// windows (N, 4) int64 on the CPU, (y0, y1, x0, x1) -> 1-D bool, the windows one after the
// other, each in column-major (x-major) order: element (y, x) at offset + (x - x0) * h + (y - y0).
at::Tensor paste_masks_packed_cpu(const at::Tensor& masks, const at::Tensor& boxes,
                                  const at::Tensor& windows, double threshold);
at::Tensor paste_masks_packed_cuda(const at::Tensor& masks, const at::Tensor& boxes,
                                   const at::Tensor& windows, double threshold);

// Shared argument checks; returns the packed offsets (N + 1,) int64 on the CPU for windows.
void check_paste_inputs(const at::Tensor& masks, const at::Tensor& boxes);
at::Tensor packed_offsets(const at::Tensor& masks, const at::Tensor& windows);

}  // namespace paste_masks
}  // namespace maskrcnn
