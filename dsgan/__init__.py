"""dsgan: a DeepSpeed-backed trainer for large GANs."""

__version__ = "0.1.0"
