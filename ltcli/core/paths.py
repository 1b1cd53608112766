"""Where lt keeps things outside a store: its cache folder (data, content ids, compiled code)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """``$LT_CACHE_DIR``, else the user's cache folder for lt (``~/.cache/lt`` on Linux)."""
    return Path(os.environ.get("LT_CACHE_DIR") or platformdirs.user_cache_dir("lt"))


def data_cache_dir() -> Path:
    """Where ``lt data fetch`` puts data sets by default, and the last place lt looks."""
    return cache_dir() / "data"


def compile_cache_dir() -> Path:
    """JAX's persistent compilation cache, shared by every lt process of this user."""
    return cache_dir() / "jax"


def default_store() -> Path:
    """``$LT_STORE``, else ``results/`` in the working directory."""
    return Path(os.environ.get("LT_STORE") or "results")


DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def request_deterministic_gpu_ops() -> None:
    """Adds XLA's switch for deterministic GPU kernels (no atomics in reductions and
    scatters) to ``XLA_FLAGS``. XLA reads the flags when JAX starts its backend, so this
    takes effect only before the first JAX computation of the process (``lt run`` calls it
    before importing JAX); on a CPU XLA is deterministic without it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_GPU_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_GPU_FLAG}".strip()


def enable_compile_cache() -> None:
    """Points JAX's persistent compilation cache at `compile_cache_dir`, so a second process
    training the same shapes loads compiled programs instead of compiling them again.

    Every program is kept, however fast it compiled: with a time threshold, whether a small
    program (a level's invariant check, its first batches) was kept depended on how busy the
    machine was, and a second process would compile it again."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(compile_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
