"""Model kinds are presets of a family's config, not classes.

A kind names its family and fills the config fields a file leaves unset; anything set
explicitly wins. So a beta-VAE is ``kind = "vae"`` with ``beta = 4`` just as well as
``kind = "beta-vae"``. Each family registers its own kinds next to its code.
"""
from __future__ import annotations

from typing import Any

from lvmkit.core.registry import Registry

MODEL_KINDS: Registry[dict[str, Any]] = Registry("model kind")

# Values used when neither the config nor the kind sets a field.
FALLBACKS: dict[str, Any] = {"beta": 1.0, "mmd_weight": 10.0}
