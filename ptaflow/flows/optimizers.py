"""The optimiser of the flow fits: clipped Adam that skips non-finite updates, one object per
setting and process (optax builds closures, which JAX's compilation cache keys on, so equal
settings must give the same object for the compiled steps to be shared between fits)."""

from __future__ import annotations

import functools

import optax

from ..settings import TrainConfig

__all__ = ["optimizer", "decaying_optimizer"]


def optimizer(config: TrainConfig, learning_rate=None):
    """Clipped Adam that skips non-finite updates; the rate defaults to the training schedule
    (a constant `learning_rate` where given)."""
    if learning_rate is not None:
        return _cached_optimizer(config.clip_norm, float(learning_rate))
    schedule = (
        config.learning_rate,
        config.warmup_steps,
        max(config.max_steps, 1),
        config.final_lr_fraction,
    )
    return _cached_optimizer(config.clip_norm, schedule)


def decaying_optimizer(config: TrainConfig, n_steps: int, final_fraction: float = 0.01):
    """Clipped Adam at `config.refine_learning_rate`, decaying (cosine) to `final_fraction` of
    it over n_steps."""
    return _cached_optimizer(
        config.clip_norm, (config.refine_learning_rate, 1, int(n_steps), float(final_fraction))
    )


@functools.lru_cache(maxsize=32)
def _cached_optimizer(clip_norm: float, rate: float | tuple):
    if isinstance(rate, tuple):
        peak, warmup, max_steps, final = rate
        rate = optax.warmup_cosine_decay_schedule(
            init_value=peak * 0.1,
            peak_value=peak,
            warmup_steps=max(warmup, 1),
            decay_steps=max(max_steps - warmup, 1) + max(warmup, 1),
            end_value=peak * final,
        )
    return optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(rate)),
        max_consecutive_errors=50,
    )
