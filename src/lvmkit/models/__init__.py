"""lvmkit.models."""
