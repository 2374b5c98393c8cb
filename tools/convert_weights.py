#!/usr/bin/env python
"""Convert weights of another framework into a checkpoint this project loads as MODEL.WEIGHT:

    python tools/convert_weights.py detectron2 model_final_f10217.pkl out/d2_R50_FPN.pth
    python tools/convert_weights.py auto e2e_mask_rcnn_R_50_FPN_1x.pth out/mb.pth \\
        --config-file configs/e2e_mask_rcnn_R_50_FPN_1x.yaml MODEL.ROI_BOX_HEAD.NUM_CLASSES 81

SOURCE: torchvision, torchvision-resnet, detectron2, maskrcnn-benchmark, caffe2 or auto.
Prints the tensors mapped, skipped and left uninitialised in the model built from the config
(default: the R-50-FPN Mask R-CNN recipe shaped like the weights), and the input config the
weights expect. OUT holds {"model", "converted_from", "recommended_config"}.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.checkpoint.convert import FORMATS, UnsafePickleError  # noqa: E402
from maskrcnn.checkpoint.convert.tool import convert_weights_file  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=[*FORMATS, "auto"], help="format of IN")
    parser.add_argument("input", metavar="IN", help=".pth or .pkl weights file")
    parser.add_argument("output", metavar="OUT", help="converted checkpoint (.pth)")
    parser.add_argument("--config-file", default="", help="config of the target model")
    parser.add_argument("opts", nargs="*", help="config overrides as KEY VALUE pairs")
    args = parser.parse_intermixed_args(argv)  # --config-file may come after IN OUT
    try:
        report, mismatches = convert_weights_file(args.input, args.output, args.source,
                                                  args.config_file or None, args.opts)
    except (OSError, ValueError, RuntimeError, UnsafePickleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.to_text(full=True))
    if mismatches:
        print("the target config differs from what the weights expect:")
        print("\n".join(f"  {line}" for line in mismatches))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
