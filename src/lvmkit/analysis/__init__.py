"""lvmkit.analysis."""
