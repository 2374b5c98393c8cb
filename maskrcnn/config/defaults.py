"""Every configuration key, with its default and a one-line comment.

Key layout follows maskrcnn-benchmark wherever the concept exists, so its YAML
files and command lines carry over. Keys that only exist there for code paths
this project does not have are accepted at their default value only (listed at the
bottom, with what to use instead); value ranges and choices are in checks.py.

Number of classes: ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` COUNTS THE BACKGROUND, as
in maskrcnn-benchmark (COCO: 80 categories -> 81). The default ``0`` means
"take it from the training set": categories + 1. An explicit value that
disagrees with the training set is an error that states both numbers.
"""
from .cfgnode import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # only GeneralizedRCNN exists
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"; "cuda" falls back to "cpu" with a warning when absent
_C.MODEL.MASK_ON = False  # add the mask head (Mask R-CNN); False gives Faster R-CNN
_C.MODEL.RPN_ONLY = False  # stop after the RPN (proposals are the output)
_C.MODEL.WEIGHT = ""  # initial model weights (model only, never optimizer/iteration)
_C.MODEL.CHANNELS_LAST = False  # backbone and heads in channels-last (NHWC) memory format; same results, faster on some GPUs
# Input normalisation: images reach the model as RGB uint8; with TO_BGR255 they are
# flipped to BGR and kept in 0..255 (Caffe2/Detectron weights), else RGB scaled to 0..1.
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shortest edge in training; several values = multi-scale
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice": one of MIN_SIZE_TRAIN; "range": uniform in [MIN_SIZE_TRAIN[0], [1]]
_C.INPUT.MAX_SIZE_TRAIN = 1333  # cap on the longest edge in training
_C.INPUT.MIN_SIZE_TEST = 800  # shortest edge at test time
_C.INPUT.MAX_SIZE_TEST = 1333  # cap on the longest edge at test time
_C.INPUT.RESIZE_MODE = "antialias"  # "antialias": uint8, antialiased, rounded sizes; "torchvision": float bilinear, floored sizes; "pil": PIL bilinear on uint8, detectron2's sizes
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]  # per channel, in the model's channel order and range
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]  # per channel divisor
_C.INPUT.TO_BGR255 = True  # True: BGR in 0..255 (Caffe2 weights); False: RGB in 0..1 (torchvision weights)
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5  # probability of a horizontal flip in training
_C.INPUT.BRIGHTNESS = 0.0  # training colour jitter: brightness factor drawn from [1 - v, 1 + v] (0: off)
_C.INPUT.CONTRAST = 0.0  # contrast factor from [1 - v, 1 + v] (0: off)
_C.INPUT.SATURATION = 0.0  # saturation factor from [1 - v, 1 + v] (0: off)
_C.INPUT.HUE = 0.0  # hue shift from [-v, v], v in [0, 0.5] (0: off)
_C.INPUT.VERTICAL_FLIP_PROB_TRAIN = 0.0  # probability of an upside-down flip in training (boxes and masks follow)

# ---------------------------------------------------------------------------- data
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # names of training sets (built-in or from DATASETS.CATALOG)
_C.DATASETS.TEST = ()  # names of evaluation sets
_C.DATASETS.DATA_DIR = "datasets"  # root of the built-in datasets (coco/, shapes/)
# Your own COCO-format data, no Python edited:
#   DATASETS.CATALOG.my_train.ANN_FILE path/to/instances.json
#   DATASETS.CATALOG.my_train.IMG_DIR path/to/images
_C.DATASETS.CATALOG = CN(new_allowed=True)
# Checks when a dataset is built (errors stop before the first iteration): "annotations" (JSON
# only), "header" (+ open each image header: missing files, sizes), "full" (+ decode every image)
_C.DATASETS.CHECK = "header"

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # data loading processes per training process
_C.DATALOADER.SIZE_DIVISIBILITY = 32  # pad batches to a multiple of this (FPN needs 32)
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch portrait and landscape images separately
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images with no usable annotation

# ---------------------------------------------------------------------------- backbone
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.CONV_BODY = "R-50-FPN"  # R-{18,26,34,50,101,152}-FPN
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2  # freeze the stem (1) and stages up to this one (0: none)
_C.MODEL.BACKBONE.OUT_CHANNELS = 256  # FPN channels

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.NUM_GROUPS = 1  # ResNeXt cardinality
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # bottleneck width of stage 2 per group
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False  # True: MSRA/Caffe2 (stride in the 1x1); False: torchvision
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"  # only checked: "BottleneckWithGN" needs NORM "GN" (NORM builds the norm)
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"  # only checked: "StemWithGN" needs NORM "GN" (NORM builds the norm)
_C.MODEL.RESNETS.RES5_DILATION = 1  # dilation of the last stage
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # channels after the stem
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # output channels of stage 2 (doubles each stage)
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "FrozenBN" (pretrained), "BN" or "GN" (from scratch)

_C.MODEL.FPN = CN()
_C.MODEL.FPN.USE_GN = False  # GroupNorm in the FPN convolutions (the same as NORM "GN")
_C.MODEL.FPN.NORM = ""  # norm after each FPN conv: "" (none), "GN", "FrozenBN" or "BN" (torchvision's *_v2 models: BN, FrozenBN to fine-tune)
_C.MODEL.FPN.USE_RELU = False  # accepted, must stay False

_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32  # groups of every GN layer (-1: use DIM_PER_GP)
_C.MODEL.GROUP_NORM.EPSILON = 1e-5  # GroupNorm epsilon
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1  # channels per group instead (with NUM_GROUPS -1); -1: off

# ---------------------------------------------------------------------------- RPN
_C.MODEL.RPN = CN()
_C.MODEL.RPN.USE_FPN = True  # accepted, must stay True: the RPN always runs on FPN levels
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)  # one size per FPN level P2..P6
_C.MODEL.RPN.ANCHOR_STRIDE = (4, 8, 16, 32, 64)  # stride of each level
_C.MODEL.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width of anchors
_C.MODEL.RPN.ANCHOR_ROUNDING = True  # round cell anchors to whole pixels (torchvision, maskrcnn-benchmark); False: detectron2's exact anchors
_C.MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE = False  # True: stride = padded image side // feature side per level (torchvision: 61, not 64, for P6 of an 800-pixel side)
_C.MODEL.RPN.STRADDLE_THRESH = -1  # >= 0: the RPN loss ignores anchors crossing the image border by more pixels (maskrcnn-benchmark; its default 0); -1: uses all (torchvision)
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7  # anchor IoU above which it is foreground
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3  # anchor IoU below which it is background
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the loss
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # target fraction of foreground among them
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 2000  # proposals kept per level before NMS (train)
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 1000  # ... (test)
_C.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 2000  # proposals kept per level and image after NMS (train), before FPN_POST_NMS_*
_C.MODEL.RPN.POST_NMS_TOP_N_TEST = 1000  # ... (test)
_C.MODEL.RPN.NMS_THRESH = 0.7  # NMS IoU among proposals of one level
_C.MODEL.RPN.MIN_SIZE = 0  # drop proposals smaller than this (pixels)
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 2000  # proposals kept PER IMAGE after NMS (train)
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 1000  # proposals kept per image after NMS (test)
_C.MODEL.RPN.FPN_POST_NMS_PER_BATCH = False  # accepted; must stay False (per-image top-N always)
_C.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9  # beta of the box regression loss
_C.MODEL.RPN.LOSS_WEIGHT = 1.0  # multiplies both RPN losses
_C.MODEL.RPN.LOSS_NORMALIZATION = "sampled"  # RPN losses divided by the "sampled" anchors (torchvision, maskrcnn-benchmark) or "batch_size": BATCH_SIZE_PER_IMAGE x images (detectron2)
_C.MODEL.RPN.RPN_HEAD = "SingleConvRPNHead"  # the only head
_C.MODEL.RPN.NUM_CONVS = 1  # 3x3 conv + ReLU layers of the RPN head before its two predictions (torchvision's *_v2 models: 2)

# ---------------------------------------------------------------------------- ROI heads
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.USE_FPN = True  # accepted, must stay True (FPN only)
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5  # proposal IoU for foreground
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.5  # proposal IoU below which it is background
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # box coder weights (dx, dy, dw, dh)
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # proposals sampled per image for the loss
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # target foreground fraction among them
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.05  # detections below this score are dropped
_C.MODEL.ROI_HEADS.NMS = 0.5  # per-class NMS IoU
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 100  # detections kept per image

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "FPN2MLPFeatureExtractor"  # two fc layers, or "FPNXconv1fcFeatureExtractor": NUM_STACKED_CONVS 3x3 convs + one fc
_C.MODEL.ROI_BOX_HEAD.PREDICTOR = "FPNPredictor"  # the only one (another name is an error)
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # ROIAlign output size
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2  # ROIAlign samples per bin side (0: adaptive)
_C.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (0.25, 0.125, 0.0625, 0.03125)  # scales of P2..P5
_C.MODEL.ROI_BOX_HEAD.POOLER_ALIGNED = False  # ROIAlign half-pixel alignment (False: torchvision/mrcnn-benchmark)
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024  # width of the fc layers (fc6, fc7; fc6 alone after the convs)
_C.MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS = 4  # convs of FPNXconv1fcFeatureExtractor (that extractor only)
_C.MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM = 256  # their channels (FPNXconv1fcFeatureExtractor only)
_C.MODEL.ROI_BOX_HEAD.DILATION = 1  # their dilation (FPNXconv1fcFeatureExtractor only)
_C.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 0  # INCLUDING background; 0 = categories of the training set + 1
_C.MODEL.ROI_BOX_HEAD.USE_GN = False  # GroupNorm (MODEL.GROUP_NORM) after each conv of FPNXconv1fc, or each fc of FPN2MLP (the same as NORM "GN")
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # norm after each conv of FPNXconv1fc: "" (none), "GN", "FrozenBN" or "BN" (torchvision's *_v2 models); FPN2MLP: "" or "GN"
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0  # beta of the box regression loss
_C.MODEL.ROI_BOX_HEAD.LOSS_WEIGHT = 1.0  # multiplies both box head losses

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR = "MaskRCNNFPNFeatureExtractor"  # the only one (another name is an error)
_C.MODEL.ROI_MASK_HEAD.PREDICTOR = "MaskRCNNC4Predictor"  # the only one (another name is an error)
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # ROIAlign output size
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 2  # ROIAlign samples per bin side
_C.MODEL.ROI_MASK_HEAD.POOLER_SCALES = (0.25, 0.125, 0.0625, 0.03125)  # scales of P2..P5
_C.MODEL.ROI_MASK_HEAD.POOLER_ALIGNED = False  # ROIAlign half-pixel alignment
_C.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (256, 256, 256, 256)  # channels of the mask head convs
_C.MODEL.ROI_MASK_HEAD.DILATION = 1  # dilation of those convs
_C.MODEL.ROI_MASK_HEAD.RESOLUTION = 28  # predicted mask size (2 x POOLER_RESOLUTION)
_C.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = False  # accepted, must stay False
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = False  # accepted, must stay False: evaluation and the Predictor always paste masks
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD = 0.5  # probability threshold of a pasted mask
_C.MODEL.ROI_MASK_HEAD.PASTE_RULE = "center"  # "center" (detectron2's grid_sample rule) or "torchvision" (see layers/mask_ops.py)
_C.MODEL.ROI_MASK_HEAD.USE_GN = False  # GroupNorm (MODEL.GROUP_NORM) after each conv of the mask head (the same as NORM "GN")
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # norm after each conv of the mask head: "" (none), "GN", "FrozenBN" or "BN" (torchvision's *_v2 models)
_C.MODEL.ROI_MASK_HEAD.LOSS_WEIGHT = 1.0  # multiplies the mask loss
_C.MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE = 0  # training: the mask loss on at most this many positives per image, a random subset (0: all, as maskrcnn-benchmark)
_C.MODEL.ROI_MASK_HEAD.TARGET_RULE = "center"  # training targets: "center" binary, instance at each cell centre (maskrcnn-benchmark); "torchvision" soft, roi_align of the GT bitmap

# ---------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "SGD"  # "SGD" (with MOMENTUM) or "AdamW" (with BETAS; weight decay decoupled from the gradient)
_C.SOLVER.MAX_ITER = 40000  # total iterations
_C.SOLVER.BASE_LR = 0.001  # learning rate for IMS_PER_BATCH images (scale it linearly)
_C.SOLVER.BIAS_LR_FACTOR = 2  # biases get BASE_LR * this
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum (SGD only)
_C.SOLVER.BETAS = (0.9, 0.999)  # AdamW's (beta1, beta2) (AdamW only)
_C.SOLVER.WEIGHT_DECAY = 0.0005  # L2 on weights
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0  # L2 on biases
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # L2 on normalisation layers' affine parameters
_C.SOLVER.LR_SCHEDULER = "WarmupMultiStepLR"  # or "WarmupCosineLR"
_C.SOLVER.GAMMA = 0.1  # multi-step decay factor
_C.SOLVER.STEPS = (30000,)  # iterations where the lr is multiplied by GAMMA
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3  # lr factor at iteration 0 of the warmup
_C.SOLVER.WARMUP_ITERS = 500  # warmup length
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.COSINE_END_FACTOR = 0.0  # WarmupCosineLR: lr factor reached at MAX_ITER
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip the gradient norm before each step
_C.SOLVER.CLIP_GRADIENTS.MAX_NORM = 10.0  # total L2 norm limit
_C.SOLVER.CHECKPOINT_PERIOD = 2500  # save model_XXXXXXX.pth every N iterations
_C.SOLVER.IMS_PER_BATCH = 16  # images per step, TOTAL over all processes
_C.SOLVER.REFERENCE_WORLD_SIZE = 0  # processes the SOLVER values are for; another count rescales them (solver/scaling.py); 0: off
_C.SOLVER.LOG_PERIOD = 20  # print and record metrics every N iterations
_C.SOLVER.MAX_NONFINITE_SKIPS = 0  # non-finite-loss iterations skipped (no update) before stopping; 0: stop at the first
_C.SOLVER.DIVERGENCE = CN()
_C.SOLVER.DIVERGENCE.ENABLED = True  # stop (before the step is applied) when the total loss exceeds FACTOR x its early median
_C.SOLVER.DIVERGENCE.FACTOR = 10.0  # how many times the early median loss counts as divergence (> 1)
_C.SOLVER.DIVERGENCE.REFERENCE_ITERS = 20  # the early median is over the run's first N finite losses
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed precision training: autocast over backbone and heads; losses, boxes and NMS stay float32
_C.SOLVER.AMP.DTYPE = "float16"  # "float16" (CUDA only, with a gradient scaler) or "bfloat16" (CUDA or CPU, no scaler)

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EXPECTED_RESULTS = []  # accepted, must stay empty (checking expected results is not implemented)
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4  # accepted, must stay 4 (see EXPECTED_RESULTS)
_C.TEST.IMS_PER_BATCH = 8  # images per inference step, TOTAL over all processes
_C.TEST.DETECTIONS_PER_IMG = 100  # accepted, must stay 100: the key is MODEL.ROI_HEADS.DETECTIONS_PER_IMG
_C.TEST.EVAL_PERIOD = 0  # evaluate every N iterations during training (0: only at the end)
_C.TEST.VIS_IMAGES = 4  # at each evaluation in training, the first N images of each test set, ground truth | predictions, to TensorBoard (0: none)
_C.TEST.VIS_SCORE_THRESHOLD = 0.5  # lowest score of the predictions drawn in those images
_C.TEST.BBOX_AUG = CN()
_C.TEST.BBOX_AUG.ENABLED = False  # accepted, must stay False (no test-time augmentation)

# ---------------------------------------------------------------------------- misc
_C.OUTPUT_DIR = "output"  # checkpoints, log.txt, config.yaml, TensorBoard events, inference/
_C.PATHS_CATALOG = ""  # accepted, must stay "": datasets come from DATASETS.CATALOG
_C.SEED = -1  # random seed; < 0 picks one at random (logged)
_C.VIS_PERIOD = 0  # every N training iterations, ground truth | top-20 RPN proposals of one image to TensorBoard (0: off)
_C.DIST_TIMEOUT_S = 1800  # seconds a process waits for the others (collectives, barriers) before failing
_C.DTYPE = "float32"  # accepted, must stay float32 (mixed precision: SOLVER.AMP)

# Keys accepted so that maskrcnn-benchmark files load, for what this project does not have (or
# has under another key). Only the listed values are accepted; any other is a ConfigError that
# names the key and gives the advice (config/checks.py). key -> (allowed values, advice).
_FPN_ONLY = ("the RPN and the ROI heads always run on the FPN levels (C4 backbones are not implemented): "
             "use MODEL.BACKBONE.CONV_BODY R-<depth>-FPN and remove the key")
_NO_EXPECTED = ("checking results against expected values is not implemented; compare "
                "OUTPUT_DIR/inference/<dataset>/metrics.json instead, and remove the key")
UNSUPPORTED_VALUES = {
    "MODEL.META_ARCHITECTURE": (("GeneralizedRCNN",), "it is the only architecture; remove the key"),
    "MODEL.RPN.USE_FPN": ((True,), _FPN_ONLY),
    "MODEL.ROI_HEADS.USE_FPN": ((True,), _FPN_ONLY),
    "MODEL.RPN.RPN_HEAD": (("SingleConvRPNHead",), "it is the only RPN head; remove the key"),
    "MODEL.RPN.FPN_POST_NMS_PER_BATCH": ((False,), "proposals are kept per image (MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN "
                                                   "/ _TEST); remove the key"),
    "MODEL.FPN.USE_RELU": ((False,), "the FPN has no ReLU; remove the key"),
    "MODEL.RESNETS.TRANS_FUNC": (("BottleneckWithFixedBatchNorm", "BottleneckWithGN"),
                                 "the blocks' norm is MODEL.RESNETS.NORM (FrozenBN, BN or GN); set that instead"),
    "MODEL.RESNETS.STEM_FUNC": (("StemWithFixedBatchNorm", "StemWithGN"),
                                "the stem's norm is MODEL.RESNETS.NORM (FrozenBN, BN or GN); set that instead"),
    "MODEL.ROI_BOX_HEAD.PREDICTOR": (("FPNPredictor",), "it is the only box predictor; remove the key"),
    "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR": (("MaskRCNNFPNFeatureExtractor",), "the mask head is the convolutions "
                                              "of MODEL.ROI_MASK_HEAD.CONV_LAYERS and DILATION; remove the key"),
    "MODEL.ROI_MASK_HEAD.PREDICTOR": (("MaskRCNNC4Predictor",), "it is the only mask predictor (a transposed conv "
                                      "and a 1x1 conv per class); remove the key"),
    "MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR": ((False,), "the mask head has its own features; remove the key"),
    "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS": ((False,), "masks are always pasted into the image by evaluation and "
                                              "the Predictor, per MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD "
                                              "and PASTE_RULE; remove the key"),
    "TEST.BBOX_AUG.ENABLED": ((False,), "test-time augmentation is not implemented; remove the key"),
    "TEST.DETECTIONS_PER_IMG": ((100,), "use MODEL.ROI_HEADS.DETECTIONS_PER_IMG (detections kept per image)"),
    "TEST.EXPECTED_RESULTS": (([],), _NO_EXPECTED),
    "TEST.EXPECTED_RESULTS_SIGMA_TOL": ((4,), _NO_EXPECTED),
    "PATHS_CATALOG": (("",), "remove the key and name your datasets with DATASETS.CATALOG.<name>.ANN_FILE "
                             "and .IMG_DIR (README: Training on your own COCO-format data)"),
    "DTYPE": (("float32",), "the weights stay float32; for mixed precision training use SOLVER.AMP.ENABLED True "
                            "(and SOLVER.AMP.DTYPE), and remove the key"),
}
