"""lt's speed on this machine (``make bench``, ``python -m benchmarks``): a development
tool beside the package, not part of it."""
