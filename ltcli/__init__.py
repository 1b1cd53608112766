"""lt: lottery-ticket experiments (Frankle & Carbin, ICLR 2019) on JAX.

The package is layered: ``spec`` and ``descriptor`` turn an experiment file and flags into
a content-hashed run; ``runner`` walks its pruning levels, asking ``store`` what is already
done and handing the rest to ``engine``; ``models``, ``data`` and ``pruning`` are the parts
the engine is built from. ``cli`` is a thin Click layer over these functions.
"""

__version__ = "0.1.0"
