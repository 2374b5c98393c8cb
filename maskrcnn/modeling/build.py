"""The one place that turns the model part of the config into constructor calls."""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from ..config.checks import norm_of
from ..layers.conv_norm import make_norm
from .backbone import FPN, BackboneWithFPN, ResNet
from .balanced_sampler import BalancedPositiveNegativeSampler
from .box_coder import BoxCoder
from .detector import GeneralizedRCNN
from .matcher import Matcher
from .poolers import Pooler
from .roi_heads.box_head.head import BoxPredictor, MLPFeatureExtractor, ROIBoxHead, XConvFCFeatureExtractor
from .roi_heads.box_head.inference import BoxPostProcessor
from .roi_heads.box_head.proposal_sampler import ProposalSampler
from .roi_heads.mask_head.head import MaskFeatureExtractor, MaskPredictor, ROIMaskHead
from .roi_heads.roi_heads import ROIHeads
from .rpn.anchor_generator import AnchorGenerator
from .rpn.head import RPNHead
from .rpn.inference import ProposalSelector
from .rpn.loss import RPNLoss
from .rpn.rpn import RPN

logger = logging.getLogger(__name__)


def build_backbone(cfg) -> BackboneWithFPN:
    m = re.fullmatch(r"R-(\d+)-FPN", cfg.MODEL.BACKBONE.CONV_BODY)
    if m is None:
        raise ValueError(f"MODEL.BACKBONE.CONV_BODY '{cfg.MODEL.BACKBONE.CONV_BODY}' unknown: "
                         "use R-<depth>-FPN with depth 18, 26, 34, 50, 101 or 152")
    r, gn = cfg.MODEL.RESNETS, cfg.MODEL.GROUP_NORM
    gn_args = dict(gn_groups=gn.NUM_GROUPS, gn_eps=gn.EPSILON, gn_dim_per_group=gn.DIM_PER_GP)
    body = ResNet(depth=int(m.group(1)), norm=r.NORM, stem_out_channels=r.STEM_OUT_CHANNELS,
                  res2_out_channels=r.RES2_OUT_CHANNELS, width_per_group=r.WIDTH_PER_GROUP,
                  num_groups=r.NUM_GROUPS, stride_in_1x1=r.STRIDE_IN_1X1, res5_dilation=r.RES5_DILATION,
                  freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT, **gn_args)
    fpn = FPN(in_shapes=body.out_shapes, out_channels=cfg.MODEL.BACKBONE.OUT_CHANNELS,
              norm=norm_of(cfg.MODEL.FPN), **gn_args)
    return BackboneWithFPN(body, fpn)


def build_rpn(cfg, in_channels: int) -> RPN:
    c = cfg.MODEL.RPN
    anchors = AnchorGenerator(sizes=c.ANCHOR_SIZES, strides=c.ANCHOR_STRIDE, aspect_ratios=c.ASPECT_RATIOS,
                              rounding=c.ANCHOR_ROUNDING, strides_from_image=c.ANCHOR_STRIDES_FROM_IMAGE)
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))

    def selector(pre: int, post: int, level_post: int) -> ProposalSelector:
        return ProposalSelector(box_coder=coder, pre_nms_top_n=pre, post_nms_top_n=post,
                                nms_thresh=c.NMS_THRESH, min_size=c.MIN_SIZE, level_post_nms_top_n=level_post)

    loss = RPNLoss(matcher=Matcher(c.FG_IOU_THRESHOLD, c.BG_IOU_THRESHOLD, allow_low_quality_matches=True),
                   sampler=BalancedPositiveNegativeSampler(c.BATCH_SIZE_PER_IMAGE, c.POSITIVE_FRACTION),
                   box_coder=coder, smooth_l1_beta=c.SMOOTH_L1_BETA, loss_weight=c.LOSS_WEIGHT,
                   straddle_thresh=c.STRADDLE_THRESH, normalizer=c.LOSS_NORMALIZATION)
    return RPN(head=RPNHead(in_channels=in_channels, num_anchors=anchors.num_anchors_per_location,
                            num_convs=c.NUM_CONVS),
               anchor_generator=anchors,
               train_selector=selector(c.PRE_NMS_TOP_N_TRAIN, c.FPN_POST_NMS_TOP_N_TRAIN, c.POST_NMS_TOP_N_TRAIN),
               test_selector=selector(c.PRE_NMS_TOP_N_TEST, c.FPN_POST_NMS_TOP_N_TEST, c.POST_NMS_TOP_N_TEST),
               loss=loss)


def _head_norm(cfg, node):
    """The norm layer factory of a head (``USE_GN`` / ``NORM``; GroupNorm from
    ``MODEL.GROUP_NORM``), or None for none."""
    kind, gn = norm_of(node), cfg.MODEL.GROUP_NORM
    return make_norm(kind, gn.NUM_GROUPS, gn.EPSILON, gn.DIM_PER_GP) if kind else None


def build_box_feature_extractor(cfg, in_channels: int) -> nn.Module:
    """``MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR``: two fc layers, or stacked convs and one fc."""
    b = cfg.MODEL.ROI_BOX_HEAD
    res, norm = b.POOLER_RESOLUTION, _head_norm(cfg, b)
    if b.FEATURE_EXTRACTOR == "FPNXconv1fcFeatureExtractor":
        return XConvFCFeatureExtractor(in_channels=in_channels, resolution=res, num_convs=b.NUM_STACKED_CONVS,
                                       conv_dim=b.CONV_HEAD_DIM, dilation=b.DILATION, hidden_dim=b.MLP_HEAD_DIM,
                                       norm=norm)
    return MLPFeatureExtractor(in_features=in_channels * res * res, hidden_dim=b.MLP_HEAD_DIM, norm=norm)


def build_roi_heads(cfg, in_channels: int, num_classes: int) -> ROIHeads:
    h, b = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
    coder = BoxCoder(h.BBOX_REG_WEIGHTS)
    res = b.POOLER_RESOLUTION
    box = ROIBoxHead(
        pooler=Pooler(output_size=res, scales=b.POOLER_SCALES, sampling_ratio=b.POOLER_SAMPLING_RATIO,
                      aligned=b.POOLER_ALIGNED),
        feature_extractor=build_box_feature_extractor(cfg, in_channels),
        predictor=BoxPredictor(in_features=b.MLP_HEAD_DIM, num_classes=num_classes),
        proposal_sampler=ProposalSampler(
            matcher=Matcher(h.FG_IOU_THRESHOLD, h.BG_IOU_THRESHOLD),
            sampler=BalancedPositiveNegativeSampler(h.BATCH_SIZE_PER_IMAGE, h.POSITIVE_FRACTION),
            box_coder=coder),
        post_processor=BoxPostProcessor(box_coder=coder, score_thresh=h.SCORE_THRESH, nms_thresh=h.NMS,
                                        detections_per_img=h.DETECTIONS_PER_IMG),
        smooth_l1_beta=b.SMOOTH_L1_BETA, loss_weight=b.LOSS_WEIGHT)
    mask = None
    if cfg.MODEL.MASK_ON:
        m = cfg.MODEL.ROI_MASK_HEAD
        extractor = MaskFeatureExtractor(in_channels=in_channels, layers=m.CONV_LAYERS, dilation=m.DILATION,
                                         norm=_head_norm(cfg, m))
        mask = ROIMaskHead(
            pooler=Pooler(output_size=m.POOLER_RESOLUTION, scales=m.POOLER_SCALES,
                          sampling_ratio=m.POOLER_SAMPLING_RATIO, aligned=m.POOLER_ALIGNED),
            feature_extractor=extractor,
            predictor=MaskPredictor(in_channels=extractor.out_channels, num_classes=num_classes),
            resolution=m.RESOLUTION, loss_weight=m.LOSS_WEIGHT, target_rule=m.TARGET_RULE,
            max_train_per_image=m.MAX_TRAIN_PER_IMAGE)
    return ROIHeads(box=box, mask=mask)


def build_model(cfg) -> GeneralizedRCNN:
    """Build the detector described by ``cfg`` on ``cfg.MODEL.DEVICE``.

    ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` (background included) must be resolved first
    (see :func:`maskrcnn.config.resolve_num_classes`) unless the model is RPN-only.
    """
    num_classes = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    if not cfg.MODEL.RPN_ONLY and num_classes < 2:
        raise ValueError(f"MODEL.ROI_BOX_HEAD.NUM_CLASSES is {num_classes}: it counts the background, "
                         "so it must be >= 2 (0 is resolved from the training set before building)")
    backbone = build_backbone(cfg)
    channels = backbone.out_shapes[0].channels
    rpn = build_rpn(cfg, channels)
    roi_heads = None if cfg.MODEL.RPN_ONLY else build_roi_heads(cfg, channels, num_classes)
    model = GeneralizedRCNN(backbone=backbone, rpn=rpn, roi_heads=roi_heads, pixel_mean=cfg.INPUT.PIXEL_MEAN,
                            pixel_std=cfg.INPUT.PIXEL_STD, to_bgr255=cfg.INPUT.TO_BGR255,
                            size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY,
                            channels_last=cfg.MODEL.CHANNELS_LAST)
    model = model.to(resolve_device(cfg.MODEL.DEVICE))
    # 4-D weights (convolutions) in NHWC order; loading a state dict later keeps this layout
    return model.to(memory_format=torch.channels_last) if cfg.MODEL.CHANNELS_LAST else model


def resolve_device(name: str) -> torch.device:
    """``cuda`` when asked for and present; otherwise the CPU, with a warning if CUDA was asked for."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is '%s' but CUDA is not available: running on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)
