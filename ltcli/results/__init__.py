"""What a store's finished runs mean: tables (`report`, `compare`), field diffs (`diff`),
exports (`export`, `ticket`), figures (`plot`, `plot_instability`) and `reproduce`, which
runs a paper figure and checks its claims (the paper's numbers are in `paper/`).

May import train (reproduce runs experiments), storage, experiment, models, data, science
and core; never cli.
"""
