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


EIGEN_CPU_CONVOLUTIONS_FLAG = (
    "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
)
"""XLA:CPU runs convolutions with Eigen instead of YNNPACK: Conv-2's training step ran
1.3-1.7x and ResNet-20's 1.1-1.5x faster with it on a 2-core CPU."""
EIGEN_FLAG_JAXLIB = (0, 10)
"""The oldest jaxlib the Eigen flag was checked with (0.10.2 knows it)."""


ACCELERATOR_PLUGINS = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm60-plugin", "libtpu")


def cpu_platform_expected() -> bool:
    """Whether JAX will run on its CPU backend, judged without starting one: the first of
    ``$JAX_PLATFORMS`` if set, else whether no accelerator plugin is installed (one that is
    installed but finds no device also ends on the CPU; this then says no)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    from importlib import metadata

    for name in ACCELERATOR_PLUGINS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return False
    return True


def request_fast_cpu_convolutions() -> None:
    """Adds `EIGEN_CPU_CONVOLUTIONS_FLAG` to ``XLA_FLAGS`` when JAX will run on the CPU and
    the user has not set ``xla_cpu_experimental_ynn_fusion_type`` themselves. Like
    `request_deterministic_gpu_ops`, it takes effect only before JAX starts its backend
    (the first computation or device query of the process). The step's numbers change by
    float rounding only: another library sums the same products."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags or not cpu_platform_expected():
        return
    if not _jaxlib_at_least(EIGEN_FLAG_JAXLIB):  # XLA aborts on a flag it does not know
        return
    os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_CPU_CONVOLUTIONS_FLAG}".strip()


def _jaxlib_at_least(version: tuple[int, int]) -> bool:
    from importlib import metadata

    try:
        parts = metadata.version("jaxlib").split(".")[:2]
        return tuple(int(p) for p in parts) >= version
    except (metadata.PackageNotFoundError, ValueError):
        return False


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
