"""Generative adversarial networks: a generator and a discriminator trained by alternating steps
(minimax, non-saturating, WGAN-GP); the DCGAN and MLP networks are in :mod:`.networks`."""
from lvmkit.models.gan.gan import GAN, GAN_LOSSES, GANConfig, gradient_penalty

__all__ = ["GAN", "GAN_LOSSES", "GANConfig", "gradient_penalty"]
