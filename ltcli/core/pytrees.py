"""Type aliases shared by the numeric core (the optax ``base.py`` idea)."""

from typing import Any

Params = Any
"""A Flax parameter pytree: nested dicts of arrays."""

Mask = Any
"""A pytree shaped like `Params` whose leaves are 0/1 arrays (1 = the weight survives)."""
