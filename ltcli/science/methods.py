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

LEARNED_MASKS = ("ste", "edge-popup", "supermask")
"""Masks learned by gradient, one training job per one-shot target
(`ltcli.science.learned_masks`): straight-through magnitude pruning (the forward keeps each
layer's top-|w|, every weight trains; SR-STE, Zhou et al. 2021), edge-popup (Ramanujan et
al. 2020: frozen random weights, the forward keeps each layer's top scores) and Zhou et
al. 2019's supermask (frozen weights, Bernoulli masks sampled from sigmoid(scores))."""

FROZEN_WEIGHTS = ("edge-popup", "supermask")
"""The learned-mask methods that train scores over frozen weights (the weights never
change); ``ste`` trains the weights themselves."""

TRAINS_TO_TARGET = (*SPARSE_TRAINING, *LEARNED_MASKS)
"""The methods whose ticket trains once per one-shot target from θ0 (θk), reaching it while
it trains, and whose lottery controls then train the mask it ended with (``rewind``)."""

PRUNING_METHODS = ("magnitude", *AT_INIT_METHODS, *SPARSE_TRAINING, *LEARNED_MASKS)
"""``magnitude``: of the trained weights (IMP, or one-shot after training); then the
pruning-at-initialization, the sparse-training and the learned-mask methods."""

FROZEN_INITS = ("auto", "signed-kaiming-constant", "kaiming-normal", "signed-constant", "model")
"""The weights edge-popup and supermask freeze (``prune.frozen_init``,
`ltcli.science.learned_masks.frozen_weights`): ``auto`` (edge-popup: the signed Kaiming
constant; supermask: the model's own initialization), Ramanujan et al. 2020's signed
Kaiming constant and Kaiming normal, Zhou et al. 2019's signed constant (each layer's θ0
signs times the standard deviation of its θ0), or θ0 as the model initializes it."""

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
