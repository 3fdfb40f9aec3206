"""Weight schedules: pure functions of the optimisation step."""
from __future__ import annotations

import math


def linear_warmup(step: int | None, warmup_steps: int) -> float:
    """0 -> 1 linearly over ``warmup_steps`` steps, then 1 (KL annealing, Bowman et al. 2016);
    ``step = None`` (validation, evaluation) means full weight."""
    if step is None or warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def cosine_decay(step: int, total_steps: int, final: float) -> float:
    """1 -> ``final`` along a half cosine over ``total_steps`` steps, then ``final``
    (Loshchilov & Hutter 2017, without restarts): the learning-rate factor of
    ``train.lr_schedule = "cosine"``."""
    if total_steps <= 0:
        return 1.0
    progress = min(1.0, max(0.0, step / total_steps))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
