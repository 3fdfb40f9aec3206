"""DRAW (Gregor et al. 2015): a recurrent VAE that reads and writes with attention
(:mod:`.attention`), or with convolutions (:mod:`.conv`)."""
from lvmkit.models.draw.draw import Draw, DrawConfig

__all__ = ["Draw", "DrawConfig"]
