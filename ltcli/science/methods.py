"""The names of lt's pruning methods and scoring modes, without JAX: the spec checks them,
`ltcli.science.scoring` implements them."""

PRUNING_METHODS = ("magnitude", "snip", "grasp", "synflow", "magnitude-init", "random")
"""``magnitude``: of the trained weights (IMP, or one-shot after training); the others score
θ0 and prune it once to each one-shot target before any training (`ltcli.science.scoring`)."""

DATA_METHODS = ("snip", "grasp")
"""The pruning methods that score θ0 on a batch of training data, through a forward pass
whose mode `SCORE_MODES` names (``prune.score_mode``; no other method reads that field)."""

SCORE_MODES = ("eval", "train")
"""The forward pass SNIP and GraSP score with (`ltcli.science.scoring`): ``eval`` (dropout off,
batch norm normalizing by its running statistics, which are 0 and 1 at θ0), as
namhoonlee/snip-public and ganguli-lab/Synaptic-Flow score; or ``train`` (batch norm
normalizing by the batch, dropout on), as alecwangcq/GraSP scores and lt did before the
field existed."""
