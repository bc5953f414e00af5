"""The package-wide source of seeds: ``swiftcnn.manual_seed`` and the seeds layers and ``fit`` draw.

Every random choice swiftcnn makes (default weight initialisation, ``fit``'s shuffling and
augmentation) is driven by a 64-bit seed. An explicit ``seed=`` argument is used as given; with
``seed=None`` the seed is drawn from one module-global NumPy generator. ``manual_seed(n)`` reseeds
that generator, so a program that calls it first builds the same weights and trains the same way on
every run. Without ``manual_seed`` the generator starts from operating-system entropy.
"""
import numbers
import threading

import numpy as np

__all__ = ["manual_seed", "next_seed", "check_seed"]

_SEED_LIMIT = 2**64

_lock = threading.Lock()
_generator = np.random.default_rng()


def check_seed(seed, argument="seed", owner="manual_seed"):
    """Return ``seed`` as an int in [0, 2**64), or raise naming ``owner`` and ``argument``.

    Like ``torch.manual_seed``, negative seeds down to -2**63 are accepted and taken modulo 2**64.
    ``bool`` is rejected: ``True`` is far more likely a mistake than a seed.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{owner}: {argument} must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not -(2**63) <= seed < _SEED_LIMIT:
        raise ValueError(f"{owner}: {argument} must be in [-2**63, 2**64), got {seed}")
    return seed % _SEED_LIMIT


def manual_seed(seed):
    """Seed swiftcnn's global generator so that everything drawn with ``seed=None`` is reproducible.

    After ``manual_seed(n)``, layers built without ``seed=`` get the same initial weights, and
    ``fit(..., seed=None)`` shuffles the same way, on every run of the same program.

    Args:
        seed: an int in [-2**63, 2**64) (negative values are taken modulo 2**64, as in PyTorch).
    """
    global _generator
    seed = check_seed(seed)
    with _lock:
        _generator = np.random.default_rng(seed)


def next_seed():
    """Draw the next seed (an int in [0, 2**64)) from the global generator."""
    with _lock:
        return int(_generator.integers(0, _SEED_LIMIT, dtype=np.uint64))
