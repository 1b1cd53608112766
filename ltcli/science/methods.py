"""The names of lt's pruning methods and scoring modes, without JAX: the spec checks them,
`ltcli.science.scoring` implements them."""

AT_INIT_METHODS = ("snip", "grasp", "synflow", "magnitude-init", "random")
"""Pruning at initialization: score θ0 (θk) and prune it once to each one-shot target before
any training (`ltcli.science.scoring`)."""

SPARSE_TRAINING = ("gmp", "static", "set", "rigl")
"""Sparse training: one training job per one-shot target that reaches it while it trains
(`ltcli.science.sparse_training`): gradual magnitude pruning (Zhu & Gupta 2017), a static
random mask at the layer budget, SET (Mocanu et al. 2018) and RigL (Evci et al. 2020)."""

MASK_UPDATING = ("gmp", "set", "rigl")
"""The sparse-training methods whose mask changes inside the training loop
(`ltcli.train.mask_updates`)."""

PRUNING_METHODS = ("magnitude", *AT_INIT_METHODS, *SPARSE_TRAINING)
"""``magnitude``: of the trained weights (IMP, or one-shot after training); then the
pruning-at-initialization and the sparse-training methods."""

DATA_METHODS = ("snip", "grasp")
"""The pruning methods that score θ0 on a batch of training data, through a forward pass
whose mode `SCORE_MODES` names (``prune.score_mode``; no other method reads that field)."""

SCORE_MODES = ("eval", "train")
"""The forward pass SNIP and GraSP score with (`ltcli.science.scoring`): ``eval`` (dropout off,
batch norm normalizing by its running statistics, which are 0 and 1 at θ0), as
namhoonlee/snip-public and ganguli-lab/Synaptic-Flow score; or ``train`` (batch norm
normalizing by the batch, dropout on), as alecwangcq/GraSP scores and lt did before the
field existed."""

DISTRIBUTIONS = ("uniform", "erk")
"""Sparse training's layer budgets (`ltcli.science.sparse_training.budget_counts`): one
density in every pruned layer, or Erdős-Rényi-Kernel (Evci et al. 2020)."""
