"""lt: lottery-ticket experiments (Frankle & Carbin, ICLR 2019) on JAX.

The package is layered: ``spec`` and ``descriptor`` turn an experiment file and flags into
a content-hashed run; ``launch`` asks ``store`` what is already done and, if anything is
left, hands the run to ``runner``, which walks its pruning levels with ``engine``;
``models``, ``data`` and ``pruning`` are the parts the engine is built from. ``cli`` is a
thin Click layer over these functions. Only ``runner``, ``engine`` and what they build
import JAX, so commands that train nothing start fast.
"""

__version__ = "0.1.0"
