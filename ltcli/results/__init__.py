"""What a store's finished runs mean: tables (`report`, `compare`), field diffs (`diff`),
exports (`export`, `ticket`), experiment trackers fed as a run trains or after
(`tensorboard`: event files; `wandb_log`: Weights & Biases runs; `mlflow_log`: MLflow runs;
all three write what `cell_scalars` reads of a cell), figures (`plot`, `plot_instability`),
the interactive HTML report (`page`), a run with those outputs kept current as it trains
(`session`), and `reproduce`, which runs a paper figure and checks its claims (the paper's
numbers are in `paper/`).

May import train (reproduce runs experiments), storage, experiment, models, data, science
and core; never cli.
"""
