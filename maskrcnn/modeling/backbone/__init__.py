from .fpn import FPN, BackboneWithFPN
from .resnet import ResNet
from .shape import ShapeSpec

__all__ = ["FPN", "BackboneWithFPN", "ResNet", "ShapeSpec"]
