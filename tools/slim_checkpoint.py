#!/usr/bin/env python
"""Strip a training checkpoint down to what inference needs, like a published model.

    python tools/slim_checkpoint.py output/model_final.pth model_final.pth [--half]
    -> model_final-1a2b3c4d.pth  (first 8 hex digits of the file's sha256)

Kept: the model tensors (``"model"``) and, when present, the dataset ``"categories"``
(a few bytes, needed to name the predicted classes) and the ``"recommended_config"`` (the
input convention the weights were trained with, checked when they are loaded). Dropped: optimizer, scheduler,
iteration, RNG states and data position. ``--half`` stores floating-point tensors as
float16 (half the size; they are cast back to the model's dtype on loading). The input is
read with ``torch.load(weights_only=True)``; the output is written atomically.
"""
import argparse
import hashlib
import io
import os
import sys
from typing import Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from maskrcnn.checkpoint import atomic_write, read_checkpoint  # noqa: E402
from maskrcnn.utils.errors import UserError, WeightsError, main_guard  # noqa: E402


def slim_state(path: str, half: bool = False) -> Dict[str, object]:
    """The model tensors (and categories, recommended config) of a checkpoint.

    Args:
        path: A training checkpoint (read with ``maskrcnn.checkpoint.read_checkpoint``).
        half: Store floating-point tensors as float16.

    Returns:
        ``{"model": {name: tensor}}``, plus ``"categories"`` and ``"recommended_config"`` when the
        checkpoint has them.
    """
    data = read_checkpoint(path)
    model = {}
    for k, v in data["model"].items():
        if not isinstance(v, torch.Tensor):
            continue
        model[k] = v.half() if half and v.is_floating_point() else v
    out: Dict[str, object] = {"model": model}
    if isinstance(data.get("categories"), list):
        out["categories"] = data["categories"]
    if isinstance(data.get("recommended_config"), dict):
        out["recommended_config"] = data["recommended_config"]
    return out


def hashed_name(path: str, digest: str) -> str:
    """``dir/stem-<first 8 hex digits>.ext``.

    Args:
        path: The requested output name.
        digest: The hex sha256 of the content.

    Returns:
        The name with the hash inserted before the extension (``.pth`` when there is none).
    """
    stem, ext = os.path.splitext(path)
    return f"{stem}-{digest[:8]}{ext or '.pth'}"


def write_hashed(state: Dict[str, object], out: str) -> Tuple[str, int]:
    """Serialise ``state``, hash the bytes, write them atomically to the hashed name of ``out``.

    Returns:
        ``(final path, size in bytes)``.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    final = hashed_name(out, hashlib.sha256(data).hexdigest())
    atomic_write(final, lambda f: f.write(data))
    return final, len(data)


def main() -> None:
    """Runs the command line; bad input is a UserError naming the file (status 4; 2 for OUT)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="checkpoint to slim (e.g. output/model_final.pth)")
    parser.add_argument("output", help="output name; the hash is inserted before the extension")
    parser.add_argument("--half", action="store_true", help="store floating-point tensors as float16")
    args = parser.parse_args()
    try:
        state = slim_state(args.input, args.half)
    except UserError:  # CheckpointError: missing, corrupt or unsafe
        raise
    except (OSError, RuntimeError) as e:
        raise WeightsError(f"{args.input}: {e}") from e
    try:
        final, size = write_hashed(state, args.output)
    except OSError as e:
        raise UserError(f"cannot write {args.output}: {e.strerror or e}; choose another output name") from e
    print(f"{final} ({size / 2 ** 20:.2f} MiB, {len(state['model'])} tensors)")


if __name__ == "__main__":
    main_guard(main)
