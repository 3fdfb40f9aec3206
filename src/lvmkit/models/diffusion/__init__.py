"""Denoising diffusion (DDPM): the Gaussian process and its bound (:mod:`.process`), denoising
networks (:mod:`.denoisers`), the ancestral and DDIM samplers (:mod:`.samplers`) and the model."""
from lvmkit.models.diffusion.ddpm import DDPM, DDPMConfig

__all__ = ["DDPM", "DDPMConfig"]
