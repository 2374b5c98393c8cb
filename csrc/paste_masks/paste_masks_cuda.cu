// CUDA mask pasting: one fused kernel per output layout, no float temporary at all.
//
// Each thread evaluates pixels of one detection's box-local window with the per-pixel functions
// of paste_masks.h (bit-identical to the pure-PyTorch path) and writes the thresholded bool.
// Blocks are assigned to detections in equal numbers and stride over their window, so the
// host never needs the windows (no device-to-host sync) for the full-image layout; blocks
// whose detection has a smaller window simply finish early.
#include "paste_masks.h"

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

namespace maskrcnn {
namespace paste_masks {

namespace {

constexpr int kThreadsX = 32;  // consecutive pixels of one row (full) or one column (packed)
constexpr int kThreadsY = 8;

// Blocks per detection: enough to fill the GPU, no more than the rows a window can have.
// (ATen/cuda/CUDAContext.h is avoided on purpose: it needs the cuSPARSE/cuBLAS headers, which
// minimal CUDA toolkits lack.)
int blocks_per_detection(int64_t n, int64_t max_lines) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t target = std::max<int64_t>(1, (int64_t)sms * 16 / std::max<int64_t>(n, 1));
  const int64_t lines = std::max<int64_t>(1, (max_lines + kThreadsY - 1) / kThreadsY);
  return (int)std::min<int64_t>(std::min(target, lines), 65535);
}

// Full-image layout: out[n, y, x] for the pixels of each window (the rest stays zero).
template <typename T>
__global__ void paste_full_kernel(const T* __restrict__ masks, const double* __restrict__ boxes,
                                  int64_t mh, int64_t mw, int64_t height, int64_t width,
                                  float thr, int blocks_per_det, bool* __restrict__ out) {
  const int64_t n = blockIdx.x / blocks_per_det;
  const int64_t part = blockIdx.x % blocks_per_det;
  const double* box = boxes + 4 * n;
  Window win;
  if (!box_window(box, height, width, &win)) return;
  const double sx = axis_scale(box[0], box[2], mw), sy = axis_scale(box[1], box[3], mh);
  const T* mask = masks + n * mh * mw;
  bool* dst = out + n * height * width;
  const int64_t y_step = (int64_t)blocks_per_det * kThreadsY;
  for (int64_t y = win.y0 + part * kThreadsY + threadIdx.y; y < win.y1; y += y_step) {
    const Tap ty = axis_tap(y, box[1], sy, mh);
    for (int64_t x = win.x0 + threadIdx.x; x < win.x1; x += kThreadsX) {
      const Tap tx = axis_tap(x, box[0], sx, mw);
      dst[y * width + x] = pixel_value(mask, mh, mw, ty, tx) >= thr;
    }
  }
}

// Packed layout: window k column-major at offsets[k], the windows given by the host.
template <typename T>
__global__ void paste_packed_kernel(const T* __restrict__ masks, const double* __restrict__ boxes,
                                    const int64_t* __restrict__ windows,
                                    const int64_t* __restrict__ offsets, int64_t mh, int64_t mw,
                                    float thr, int blocks_per_det, bool* __restrict__ out) {
  const int64_t n = blockIdx.x / blocks_per_det;
  const int64_t part = blockIdx.x % blocks_per_det;
  const double* box = boxes + 4 * n;
  const int64_t y0 = windows[4 * n], y1 = windows[4 * n + 1];
  const int64_t x0 = windows[4 * n + 2], x1 = windows[4 * n + 3];
  const double sx = axis_scale(box[0], box[2], mw), sy = axis_scale(box[1], box[3], mh);
  const T* mask = masks + n * mh * mw;
  bool* dst = out + offsets[n];
  const int64_t h = y1 - y0;
  const int64_t x_step = (int64_t)blocks_per_det * kThreadsY;
  for (int64_t x = x0 + part * kThreadsY + threadIdx.y; x < x1; x += x_step) {
    const Tap tx = axis_tap(x, box[0], sx, mw);
    for (int64_t y = y0 + threadIdx.x; y < y1; y += kThreadsX) {
      const Tap ty = axis_tap(y, box[1], sy, mh);
      dst[(x - x0) * h + (y - y0)] = pixel_value(mask, mh, mw, ty, tx) >= thr;
    }
  }
}

}  // namespace

at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                            int64_t width, double threshold) {
  check_paste_inputs(masks, boxes);
  TORCH_CHECK(masks.is_cuda(), "paste_masks_cuda: masks must be a CUDA tensor");
  TORCH_CHECK(height >= 0 && width >= 0, "bad image size");
  const c10::cuda::CUDAGuard guard(masks.device());
  const auto m = masks.contiguous();
  const auto b = boxes.to(at::kDouble).contiguous();
  const int64_t n = m.size(0), mh = m.size(1), mw = m.size(2);
  auto out = at::zeros({n, height, width}, m.options().dtype(at::kBool));
  if (n == 0 || height == 0 || width == 0 || mh == 0 || mw == 0) return out;
  const int bpd = blocks_per_detection(n, height);
  const dim3 block(kThreadsX, kThreadsY);
  const dim3 grid((unsigned)(n * bpd));
  TORCH_CHECK(n * bpd < (int64_t(1) << 31), "too many detections for one launch");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_cuda", [&] {
    paste_full_kernel<scalar_t><<<grid, block, 0, stream>>>(
        m.data_ptr<scalar_t>(), b.data_ptr<double>(), mh, mw, height, width,
        static_cast<float>(threshold), bpd, out.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor paste_masks_packed_cuda(const at::Tensor& masks, const at::Tensor& boxes,
                                   const at::Tensor& windows, double threshold) {
  check_paste_inputs(masks, boxes);
  TORCH_CHECK(masks.is_cuda(), "paste_masks_packed_cuda: masks must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(masks.device());
  const auto offsets_cpu = packed_offsets(masks, windows);
  const auto m = masks.contiguous();
  const auto b = boxes.to(at::kDouble).contiguous();
  const int64_t n = m.size(0), mh = m.size(1), mw = m.size(2);
  const int64_t total = offsets_cpu.data_ptr<int64_t>()[n];
  auto out = at::empty({total}, m.options().dtype(at::kBool));
  if (total == 0) return out;
  const auto win_cpu = windows.contiguous();
  const int64_t* w = win_cpu.data_ptr<int64_t>();
  int64_t max_cols = 0;
  for (int64_t k = 0; k < n; ++k) max_cols = std::max(max_cols, w[4 * k + 3] - w[4 * k + 2]);
  const auto win_dev = win_cpu.to(m.device(), /*non_blocking=*/false);
  const auto off_dev = offsets_cpu.to(m.device(), /*non_blocking=*/false);
  const int bpd = blocks_per_detection(n, max_cols);
  TORCH_CHECK(n * bpd < (int64_t(1) << 31), "too many detections for one launch");
  const dim3 block(kThreadsX, kThreadsY);
  const dim3 grid((unsigned)(n * bpd));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_packed_cuda", [&] {
    paste_packed_kernel<scalar_t><<<grid, block, 0, stream>>>(
        m.data_ptr<scalar_t>(), b.data_ptr<double>(), win_dev.data_ptr<int64_t>(),
        off_dev.data_ptr<int64_t>(), mh, mw, static_cast<float>(threshold), bpd,
        out.data_ptr<bool>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

TORCH_LIBRARY_IMPL(maskrcnn_ops, CUDA, m) {
  m.impl("paste_masks", &paste_masks_cuda);
  m.impl("paste_masks_packed", &paste_masks_packed_cuda);
}

}  // namespace paste_masks
}  // namespace maskrcnn
