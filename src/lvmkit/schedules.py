"""Weight schedules: pure functions of the optimisation step."""
from __future__ import annotations


def linear_warmup(step: int, warmup_steps: int) -> float:
    """0 -> 1 linearly over ``warmup_steps`` steps, then 1 (KL annealing, Bowman et al. 2016)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)
