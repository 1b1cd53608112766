"""How a run trains: `launch` decides from the store whether anything is left (no JAX), the
`runner` walks the levels, `starts` derives what each cell starts from, `level` trains one
group of cells through the `engine` (the jitted masked training program: the step, the
loop, evaluation) fed by the run's `feeders` (data on the device: `device_data`; read from
the host: `streaming`), with the `recipes` (optimizer, schedule, precision) and `summary`
(a cell's numbers from its curve); `checkpoints` saves and resumes a group mid-level,
`checks` asserts the invariants at run time, `grouping` picks vmap, serial or host loop;
`executor_ray` and `claims` spread cells over a Ray cluster; `sweep` runs every point of a
sweep through `launch`, each its own run.

May import storage, experiment, models, data, science and core; never results or cli.
"""
