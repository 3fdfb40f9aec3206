"""Autoencoders (plain, denoising, VAE, beta-VAE, InfoVAE) and deep clustering (DEC/DCEC), one
family whose regularizer object says which; importing the package registers the family."""
from lvmkit.models.autoencoder.autoencoder import Autoencoder, AutoencoderConfig

__all__ = ["Autoencoder", "AutoencoderConfig"]
