"""What a weight conversion did: mapped, skipped and uninitialised tensors, and the config
the converted weights expect."""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["ConversionReport", "collapse_names"]


def collapse_names(names: Sequence[str], max_lines: int = 30) -> List[str]:
    """Groups names sharing a parent into ``parent.{a, b}`` lines; coarser when still long.

    Args:
        names: dotted tensor names.
        max_lines: above this many lines, names are counted per two-component prefix.

    Returns:
        Lines for a log message.
    """
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for n in names:
        parent, _, leaf = n.rpartition(".")
        groups.setdefault(parent, []).append(leaf)
    lines = []
    for parent, leaves in groups.items():
        if not parent:
            lines.extend(leaves)
        elif len(leaves) == 1:
            lines.append(f"{parent}.{leaves[0]}")
        else:
            lines.append(f"{parent}.{{{', '.join(leaves)}}}")
    if len(lines) <= max_lines:
        return lines
    coarse: "OrderedDict[str, int]" = OrderedDict()
    for n in names:
        key = ".".join(n.split(".")[:2])
        coarse[key] = coarse.get(key, 0) + 1
    return [f"{k}.* ({c} tensors)" if c > 1 else k for k, c in coarse.items()]


@dataclass
class ConversionReport:
    """The outcome of converting one state dict to this project's names.

    Attributes:
        source: the source format (``"torchvision"``, ``"detectron2"``, ...).
        mapped: ``(source name, our name, note)``; the note says how the tensor was changed
            (``""`` when copied as is).
        skipped: ``(source name, reason)`` for entries that are not carried over.
        uninitialised: model tensors that no converted tensor fills (only when the model's
            state dict was given).
        shape_mismatch: ``(our name, converted shape, model shape)``; ``load_model_state``
            will skip these.
        unused: converted tensors that the given model does not have (e.g. a mask head
            loaded into Faster R-CNN).
        recommended_config: config keys (``"INPUT.TO_BGR255"``, ...) and the values the
            weights were trained with.
        notes: free-form remarks (class layout, preprocessing caveats).
    """

    source: str
    mapped: List[Tuple[str, str, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    uninitialised: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)
    recommended_config: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def map(self, src: str, dst: str, note: str = "") -> None:
        self.mapped.append((src, dst, note))

    def skip(self, src: str, reason: str) -> None:
        self.skipped.append((src, reason))

    def annotate(self, dst: str, note: str) -> None:
        """Adds ``note`` to the mapping whose destination is ``dst``."""
        for i, (s, d, old) in enumerate(self.mapped):
            if d == dst:
                self.mapped[i] = (s, d, f"{old}; {note}" if old else note)
                return

    def retarget(self, dst: str, new_dst: str) -> None:
        """Renames the destination ``dst`` of a mapping to ``new_dst`` (a second renaming pass)."""
        for i, (s, d, note) in enumerate(self.mapped):
            if d == dst:
                self.mapped[i] = (s, new_dst, note)
                return

    def compare_with_model(self, state: Mapping[str, Any], model_state: Mapping[str, Any]) -> None:
        """Fills ``uninitialised``, ``shape_mismatch`` and ``unused`` against a model's state dict.

        Args:
            state: the converted state dict (our names).
            model_state: the target model's ``state_dict()``.
        """
        self.uninitialised = [k for k in model_state if k not in state]
        self.unused = [k for k in state if k not in model_state]
        self.shape_mismatch = [
            (k, tuple(v.shape), tuple(model_state[k].shape)) for k, v in state.items()
            if k in model_state and hasattr(v, "shape") and tuple(v.shape) != tuple(model_state[k].shape)
        ]

    def summary(self) -> str:
        """One line of counts."""
        parts = [f"{self.source}: mapped {len(self.mapped)}", f"skipped {len(self.skipped)}"]
        if self.uninitialised or self.unused or self.shape_mismatch:
            parts += [f"uninitialised in the model {len(self.uninitialised)}",
                      f"shape mismatches {len(self.shape_mismatch)}", f"unused by the model {len(self.unused)}"]
        return ", ".join(parts)

    def to_text(self, full: bool = False) -> str:
        """A readable report.

        Args:
            full: list every mapped tensor (``src -> dst``) instead of a count.

        Returns:
            Multi-line text.
        """
        lines = [self.summary()]
        if full:
            lines.append("mapped (source -> this project):")
            lines += [f"  {s} -> {d}" + (f"  [{n}]" if n else "") for s, d, n in self.mapped]
        else:
            changed = [(s, d, n) for s, d, n in self.mapped if n]
            if changed:
                lines.append(f"changed while mapping ({len(changed)}):")
                lines += [f"  {s} -> {d}  [{n}]" for s, d, n in changed[:12]]
                if len(changed) > 12:
                    lines.append(f"  ... and {len(changed) - 12} more")
        if self.skipped:
            lines.append(f"skipped ({len(self.skipped)}):")
            by_reason: "OrderedDict[str, List[str]]" = OrderedDict()
            for name, reason in self.skipped:
                by_reason.setdefault(reason, []).append(name)
            for reason, names in by_reason.items():
                shown = names if full else collapse_names(names, max_lines=8)
                lines.append(f"  {reason}: " + ", ".join(shown))
        if self.shape_mismatch:
            lines.append(f"shape differs from the model ({len(self.shape_mismatch)}), will not load:")
            lines += [f"  {n}: {fs} -> {ms}" for n, fs, ms in self.shape_mismatch]
        if self.uninitialised:
            lines.append(f"left uninitialised in the model ({len(self.uninitialised)}):")
            lines += [f"  {n}" for n in collapse_names(self.uninitialised)]
        if self.unused:
            lines.append(f"not used by the model ({len(self.unused)}):")
            lines += [f"  {n}" for n in collapse_names(self.unused)]
        if self.recommended_config:
            lines.append("these weights expect (config key: value):")
            lines += [f"  {k}: {v}" for k, v in self.recommended_config.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def log(self, logger: Optional[logging.Logger] = None, where: str = "") -> None:
        """Logs the report: counts and tables at INFO/WARNING, the full mapping at DEBUG.

        Args:
            logger: where to log; this module's logger when None.
            where: the file the weights came from, for the first line.
        """
        logger = logger or logging.getLogger(__name__)
        head = f"converted weights{f' from {where}' if where else ''} -- "
        level = logging.WARNING if (self.uninitialised or self.shape_mismatch) else logging.INFO
        logger.log(level, head + self.to_text(full=False))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("full mapping:\n" + "\n".join(f"  {s} -> {d}" for s, d, _ in self.mapped))
