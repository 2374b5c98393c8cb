from .build import make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR

__all__ = ["make_optimizer", "make_lr_scheduler", "WarmupMultiStepLR", "WarmupCosineLR"]
