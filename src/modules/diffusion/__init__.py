"""Diffusion networks over multi-agent trajectory segments (CODI's ε-network). Torch only: the noise schedulers
(diffusers) live with the augmenter that uses them (augmenters/codi/diffusion.py)."""
from modules.diffusion.unet import TemporalUNet

__all__ = ["TemporalUNet"]
