"""Install: pip install -e .

The CUDA extension in csrc/ is optional and never built by a CPU install; the
package imports and runs without it (pure-PyTorch paths).
"""
from setuptools import find_packages, setup

setup(
    name="maskrcnn",
    version="0.1.0",
    description="A pure-PyTorch Mask R-CNN framework in the spirit of maskrcnn-benchmark",
    packages=find_packages(include=["maskrcnn", "maskrcnn.*"]),
    python_requires=">=3.9",
    install_requires=[
        # torch and torchvision must be a matching pair; these bounds admit the tested pair
        # (torch 2.14.1 + torchvision 0.29.1) and the releases between.
        "torch>=2.1,<2.15",
        "torchvision>=0.16,<0.30",
        "pycocotools>=2.0.7,<3",
        "numpy>=1.23,<3",
        "pyyaml>=6.0,<7",
        "tensorboard>=2.14,<3",
        "pillow>=9.0",
    ],
    extras_require={"test": ["pytest>=7"]},
)
