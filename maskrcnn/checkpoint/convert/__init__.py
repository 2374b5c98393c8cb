"""Weights from other frameworks: torchvision, detectron2, maskrcnn-benchmark, Detectron/Caffe2.

    state, report = load_weights_file("model_final.pkl", model.state_dict())
    load_model_state(model, state)
    report.recommended_config  # {"INPUT.TO_BGR255": True, ..., "MODEL.ROI_BOX_HEAD.NUM_CLASSES": 81}

Formats (``detect_format`` names): ``native`` (this project), ``torchvision``
(``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn``), ``torchvision-resnet`` (ImageNet
classifiers), ``detectron2``, ``maskrcnn-benchmark``, ``caffe2`` (Detectron .pkl).
"""
from .api import CONVERTERS, convert_state_dict
from .common import BN_EPS, infer_architecture
from .detect import FORMATS, detect_format, unwrap
from .files import UnsafePickleError, load_weights_file, read_weights_file, safe_pickle_load
from .report import ConversionReport

__all__ = [
    "BN_EPS", "CONVERTERS", "ConversionReport", "FORMATS", "UnsafePickleError", "convert_state_dict",
    "detect_format", "infer_architecture", "load_weights_file", "read_weights_file", "safe_pickle_load",
    "unwrap",
]
