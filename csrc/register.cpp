// The maskrcnn._C extension: the schemas of every op in csrc/ (one TORCH_LIBRARY block; the
// CPU and CUDA implementations register themselves with TORCH_LIBRARY_IMPL in their own folder)
// and a minimal Python module so that `import maskrcnn._C` loads the library. The ops are then
// reached as torch.ops.maskrcnn_ops.<name>; the Python-side loader is maskrcnn/layers/_ext.py.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(maskrcnn_ops, m) {
  // masks (N, Mh, Mw) float16/bfloat16/float32/float64, boxes (N, 4) xyxy in image pixels
  // -> (N, height, width) bool; the rule of maskrcnn/layers/mask_ops.py.
  m.def("paste_masks(Tensor masks, Tensor boxes, int height, int width, float threshold) -> Tensor");
  // windows (N, 4) int64 CPU tensor of (y0, y1, x0, x1) -> 1-D bool of sum(h * w): the
  // windows one after the other, each column-major (the order of COCO RLE).
  m.def("paste_masks_packed(Tensor masks, Tensor boxes, Tensor windows, float threshold) -> Tensor");
}

#define MASKRCNN_CONCAT_(a, b) a##b
#define MASKRCNN_CONCAT(a, b) MASKRCNN_CONCAT_(a, b)
#define MASKRCNN_STR_(a) #a
#define MASKRCNN_STR(a) MASKRCNN_STR_(a)

extern "C" PyObject* MASKRCNN_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, MASKRCNN_STR(TORCH_EXTENSION_NAME),
      "Compiled maskrcnn ops, registered as torch.ops.maskrcnn_ops.*", -1, nullptr};
  return PyModule_Create(&module_def);
}
