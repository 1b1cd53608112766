"""What to run: the spec and its field table (`spec`), the content-hashed run descriptor
(`descriptor`), a level's members and a cell's identity (`member`), what a command asks
of a run (`plan`), the one table of what every cell starts from (`combinations`), and
``--sweep`` parsed and expanded into one spec per point (`sweep`). No
JAX here: a finished rerun answers from the store alone. (Not to be confused with
``ltcli.presets``, the package of shipped ``.toml`` specs.)

May import models, data, science and core; never storage, train, results or cli.
"""
