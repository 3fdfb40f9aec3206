"""The one training loop: every family owns its step; the loop owns epochs, validation,
checkpoints, exact resume, the NaN guard, EMA and callbacks."""
