"""lvmkit.core."""
