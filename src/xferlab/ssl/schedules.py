"""Per-step schedules: cosine from a base to a final value with an optional linear warm-up."""

from __future__ import annotations

import numpy as np


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps > 0 else np.array([])
    steps = np.arange(total_steps - len(warmup))
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, cosine])


def teacher_temperature(warmup_temp: float, temp: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """Linear warm-up of the teacher temperature, then constant."""
    ramp = np.linspace(warmup_temp, temp, warmup_steps) if warmup_steps > 0 else np.array([])
    return np.concatenate([ramp, np.full(max(total_steps - len(ramp), 0), temp)])[:total_steps]
