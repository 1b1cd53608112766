"""lt: lottery-ticket experiments (Frankle & Carbin, ICLR 2019) on JAX.

The package is one subpackage per concept, each importing only those below it: ``cli``
(thin Click commands) → ``results`` (tables, exports, figures, reproduce) → ``train`` (the
level loop, each cell's inputs, the jitted engine, the executors) → ``storage`` (the store
on disk) → ``experiment`` (spec, descriptor, plan, the combination table) → ``models`` →
``data`` → ``science`` (pruning, scoring, interpolation) → ``core`` (errors, atomic writes,
folders). Only ``train`` and what it builds import JAX, so commands that train nothing
start fast.
"""

__version__ = "0.1.0"
