"""``lt ticket``: one ticket of a run as a file, to use without lt's store.

A ticket file holds, as flat arrays named by their path in the Flax variables:

- ``mask/<layer>/<param>``: the ticket's mask over every parameter, as booleans (True: the
  weight survives; biases and batch-norm parameters are all True);
- ``rewind/params/...`` and ``rewind/batch_stats/...``: the weights the ticket's level
  started from before masking: θ0, or θk (the weights at iteration k of the dense level)
  for a pruned level of a run with late rewinding (``prune.rewind_iter`` k > 0). The
  level's starting point is ``where(mask, rewind, 0)`` with the rewind's batch statistics;
- ``trained/params/...`` and ``trained/batch_stats/...`` (``--trained`` only): the
  ticket's weights after training (pruned weights are exactly zero);

and the metadata (`describe`) as one JSON document: under the ``metadata`` key of the
safetensors header's ``__metadata__``, or as the 0-d string array ``metadata`` of an
``.npz``. Only JSON-able builtins go in it, so the file reads back with any safetensors or
numpy, no lt needed.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ltcli import data
from ltcli.core import atomic
from ltcli.core.errors import LtError, UsageError
from ltcli.core.pytrees import Mask
from ltcli.experiment import descriptor
from ltcli.science import pruning
from ltcli.storage.store import CellKey, Store

FORMAT = "lt-ticket"
VERSION = 1
SUFFIXES = (".safetensors", ".npz")
METADATA_KEY = "metadata"
SUMMARY_KEYS = (
    "early_stop_iter",
    "early_stop_test_acc",
    "early_stop_test_loss",
    "final_test_acc",
    "final_test_loss",
    "diverged",
)
"""Fields of the cell's ``metrics.json`` copied into the metadata's ``metrics``."""


@dataclasses.dataclass(frozen=True)
class Ticket:
    """A ticket in memory.

    Attributes:
      mask: boolean pytree shaped like ``rewind["params"]``.
      rewind: ``{"params", "batch_stats"}`` the level started from, unmasked (θ0 or θk).
      trained: the ticket's weights after training, or None.
      metadata: see `describe`.
    """

    mask: Mask
    rewind: dict[str, Any]
    trained: dict[str, Any] | None
    metadata: dict[str, Any]

    def start(self) -> dict[str, Any]:
        """The level's starting point: the rewind weights with pruned entries exactly +0.0."""
        return dict(self.rewind, params=apply_mask(self.rewind["params"], self.mask))


def apply_mask(params: Any, mask: Mask) -> Any:
    """`params` with the entries `mask` prunes set to +0.0 (as `ltcli.train.runner.masked`)."""
    flat_m = pruning.flatten(mask)
    return pruning.unflatten(
        {name: np.where(flat_m[name] > 0, p, np.zeros_like(p)) for name, p in _flat(params)}
    )


def _flat(tree: Any) -> list[tuple[str, np.ndarray]]:
    return sorted(pruning.flatten(tree).items())


# -- sizes -------------------------------------------------------------------------------------


def output_positions(
    model_name: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    arch: dict[str, Any] | None = None,
) -> dict:
    """``{kernel name: spatial output positions}`` of every Dense and Conv layer of a model
    (1 for a Dense layer, H_out * W_out for a convolution, T for a transformer's Dense over
    T tokens), for one input.

    The model's forward pass is traced with `jax.eval_shape` (nothing is computed) and Flax's
    ``capture_intermediates`` records the output shape of each ``nn.Dense`` and ``nn.Conv``
    call, which names the layer as its kernel is named.
    """
    import flax.linen as nn
    import jax

    from ltcli import models

    model = models.create(model_name, num_classes, arch=arch)
    variables = models.abstract_variables(model_name, image_shape, num_classes, arch)
    x = jax.ShapeDtypeStruct(
        (1, *models.get(model_name).input_shape(image_shape, arch)), np.float32
    )

    def is_layer(module: nn.Module, method: str) -> bool:
        return isinstance(module, nn.Dense | nn.Conv) and method == "__call__"

    def forward(v: Any, images: Any) -> Any:
        _, state = model.apply(
            v, images, train=False, capture_intermediates=is_layer, mutable=["intermediates"]
        )
        return state["intermediates"]

    shapes = jax.eval_shape(forward, variables, x)
    out = {}
    for name, outputs in pruning.leaves(shapes).items():
        layer = name.removesuffix(f"{pruning.SEP}__call__")
        out[f"{layer}{pruning.SEP}kernel"] = math.prod(outputs[0].shape[1:-1])
    return out


def csr_bytes(mask: np.ndarray) -> int:
    """Bytes of a kernel under `mask` in CSR: float32 values and int32 column indices of its
    survivors, plus int32 row pointers, over the kernel seen as (fan-in, fan-out) (a conv
    kernel (kh, kw, in, out) as (kh * kw * in, out))."""
    rows = math.prod(mask.shape[:-1])
    kept = int(np.count_nonzero(mask))
    return 4 * kept + 4 * kept + 4 * (rows + 1)


def sizes(mask: Mask, positions: dict[str, int]) -> dict[str, Any]:
    """Parameter counts, forward FLOPs and bytes of a network under `mask`, dense and sparse.

    FLOPs are 2 (a multiply and an add) per weight of every Dense and Conv kernel per output
    position, for one image: a Dense kernel's size, a conv kernel's size times its output's
    H * W (`output_positions`); with the mask, survivors instead of the kernel's size.
    Biases, batch norm, activations and pooling are not counted, nor zero padding removed.

    Bytes: ``dense`` stores every parameter as float32; ``csr`` stores each prunable kernel
    in CSR (`csr_bytes`) and every other parameter dense as float32.
    """
    flat = pruning.flatten(mask)
    total = sum(m.size for m in flat.values())
    kept = sum(int(np.count_nonzero(m)) for m in flat.values())
    flops_dense = sum(2 * flat[name].size * n for name, n in positions.items())
    flops_sparse = sum(2 * int(np.count_nonzero(flat[name])) * n for name, n in positions.items())
    csr = sum(csr_bytes(m) if pruning.layer_kind(name) else 4 * m.size for name, m in flat.items())
    return {
        "parameters": {"total": total, "remaining": kept},
        "flops": {"dense": flops_dense, "sparse": flops_sparse},
        "bytes": {"dense_float32": 4 * total, "csr": csr},
    }


# -- building and writing ------------------------------------------------------------------------


def check_output(path: Path) -> str:
    """The format of `path` from its suffix.

    Raises:
      UsageError: not ``.safetensors`` or ``.npz``.
    """
    if path.suffix not in SUFFIXES:
        raise UsageError(
            f"-o {path}: the suffix picks the format; use {' or '.join(SUFFIXES)} "
            f"(got {path.suffix or 'none'!r})"
        )
    return path.suffix[1:]


def _check_cell(store: Store, run_id: str, replicate: int, level: int) -> CellKey:
    """The finished ticket cell (replicate, level) of the run.

    Raises:
      UsageError: a negative number, a replicate or level with no finished ticket.
    """
    if replicate < 0 or level < 0:
        raise UsageError(f"--replicate {replicate} --level {level}: must be 0 or more")
    cell = CellKey(replicate, level)
    if store.is_finished(run_id, cell):
        return cell
    tickets = [c for c in store.finished_cells(run_id) if c.member.is_ticket]
    replicates = sorted({c.replicate for c in tickets})
    if replicate not in replicates:
        listed = ", ".join(map(str, replicates)) or "none"
        raise UsageError(
            f"--replicate {replicate}: run {run_id[:12]} has no finished ticket in it "
            f"(replicates with one: {listed})"
        )
    levels = ", ".join(str(c.level) for c in tickets if c.replicate == replicate)
    raise UsageError(
        f"--level {level}: the ticket of run {run_id[:12]} replicate {replicate} at level "
        f"{level} is not finished (finished levels: {levels}); `lt run` trains it"
    )


def _locate_data(full: dict[str, Any], data_dir: Path | None) -> data.DataSource:
    """The run's data set (located, not loaded): its image shape sizes the FLOPs.

    Raises:
      UsageError: it is not found, or what is found has other content than the run's.
    """
    name = full["data"]["dataset"]
    try:
        tokens, size = full["data"].get("tokens", "bytes"), full["data"].get("image_size")
        source = data.locate(name, data_dir, tokens=tokens, image_size=size)
    except UsageError as err:
        raise UsageError(
            f"{err} (lt ticket needs the run's data set for its image size; --data-dir)"
        ) from err
    if source.content_id != full["data"]["content"]:
        raise UsageError(
            f"{name} found in {source.origin} is not the data set the run trained on "
            "(its content differs); point --data-dir at the run's"
        )
    return source


def build(
    store: Store,
    run_id: str,
    level: int,
    replicate: int = 0,
    trained: bool = False,
    data_dir: Path | None = None,
) -> Ticket:
    """The ticket of `run_id` at (`replicate`, `level`), read from the store.

    Args:
      store: the store.
      run_id: a full run id (`Store.resolve`).
      level: the pruning level.
      replicate: the replicate.
      trained: include the trained weights.
      data_dir: searched first for the run's data set (only its image size is used).

    Raises:
      UsageError: no finished ticket at (replicate, level), or the data set is missing.
      LtError: a stored file is missing or does not match its manifest.
    """
    cell = _check_cell(store, run_id, replicate, level)
    full = store.descriptor(run_id)["full"]
    source = _locate_data(full, data_dir)
    rewind_iter = full["prune"]["rewind_iter"] if level > 0 else 0
    path = (
        store.rewind_path(run_id, replicate) if rewind_iter else store.init_path(run_id, replicate)
    )
    if not path.is_file():
        raise LtError(f"{path}: missing; the run's store is incomplete")
    rewind = store.load_weights(path)
    stored = store.read_mask(run_id, cell, rewind["params"])
    mask = pruning.unflatten({name: m > 0 for name, m in _flat(stored)})
    weights = store.read_trained(run_id, cell) if trained else None
    metrics = store.read_metrics(run_id, cell)
    arch = {k: v for k, v in full["model"].items() if k in descriptor.ARCH_FIELDS}
    model_name, classes = full["model"]["name"], source.num_classes
    positions = output_positions(model_name, source.image_shape, classes, arch)
    metadata = describe(full, run_id, cell, rewind_iter, source, mask, positions, metrics, trained)
    return Ticket(mask, rewind, weights, metadata)


def describe(
    full: dict[str, Any],
    run_id: str,
    cell: CellKey,
    rewind_iter: int,
    source: data.DataSource,
    mask: Mask,
    positions: dict[str, int],
    metrics: dict[str, Any],
    trained: bool,
) -> dict[str, Any]:
    """The ticket's metadata.

    Keys: ``format`` and ``version``; ``run_id``, ``replicate``, ``level``; ``model``,
    ``num_classes``, ``image_shape`` (H, W, C), ``dataset``, ``validation`` (training
    examples held out: the rest set the normalization, see the README); ``rewind``
    (``{"from": "init" | "rewind", "iteration": k}``); ``percent_remaining`` (Pm over the
    prunable kernels) and ``layers`` (per prunable kernel: ``kept``, ``total``,
    ``percent_remaining``); ``parameters``, ``flops``, ``bytes`` (see `sizes`); ``metrics``
    (the cell's `SUMMARY_KEYS`); ``trained``; ``descriptor`` (the run's full descriptor).
    """
    counts = pruning.counts(mask)
    return {
        "format": FORMAT,
        "version": VERSION,
        "run_id": run_id,
        "replicate": cell.replicate,
        "level": cell.level,
        "model": full["model"]["name"],
        "num_classes": source.num_classes,
        "image_shape": list(source.image_shape),
        "dataset": full["data"]["dataset"],
        "validation": full["data"]["validation"],
        "rewind": {"from": "rewind" if rewind_iter else "init", "iteration": rewind_iter},
        "percent_remaining": float(pruning.percent_remaining(mask)),
        "layers": {
            name: {"kept": kept, "total": total, "percent_remaining": 100.0 * kept / total}
            for name, (kept, total) in counts.items()
        },
        **sizes(mask, positions),
        "metrics": {k: metrics[k] for k in SUMMARY_KEYS if k in metrics},
        "trained": trained,
        "descriptor": full,
    }


def to_arrays(ticket: Ticket) -> dict[str, np.ndarray]:
    """The ticket's arrays under their flat names (``mask/fc1/kernel``, ``rewind/params/...``)."""
    trees = {"mask": ticket.mask, "rewind": ticket.rewind}
    if ticket.trained is not None:
        trees["trained"] = ticket.trained
    return {
        f"{prefix}{pruning.SEP}{name}": np.ascontiguousarray(leaf)
        for prefix, tree in trees.items()
        for name, leaf in _flat(tree)
    }


def encode(ticket: Ticket, fmt: str) -> bytes:
    """The ticket file's bytes in `fmt` (``safetensors`` or ``npz``)."""
    arrays = to_arrays(ticket)
    text = orjson.dumps(ticket.metadata, option=orjson.OPT_SORT_KEYS).decode()
    if fmt == "safetensors":
        from safetensors.numpy import save

        return save(arrays, metadata={METADATA_KEY: text})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{METADATA_KEY: np.asarray(text)})
    return buffer.getvalue()


def export(
    store: Store,
    run_id: str,
    level: int,
    output: Path,
    replicate: int = 0,
    trained: bool = False,
    data_dir: Path | None = None,
) -> Ticket:
    """Writes the ticket of `run_id` at (`replicate`, `level`) to `output`, atomically.

    Raises:
      UsageError: `output`'s suffix is not a ticket format, or see `build`; nothing is
        written then.
    """
    fmt = check_output(output)
    ticket = build(store, run_id, level, replicate, trained, data_dir)
    atomic.write_bytes(output, encode(ticket, fmt))
    return ticket


# -- reading -------------------------------------------------------------------------------------


def load(path: Path) -> Ticket:
    """Reads a ticket file written by `export`.

    Raises:
      UsageError: the suffix is not a ticket format.
    """
    path = Path(path)
    if check_output(path) == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            text = handle.metadata()[METADATA_KEY]
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    else:
        with np.load(path) as npz:
            arrays = {name: npz[name] for name in npz.files}
        text = str(arrays.pop(METADATA_KEY))
    trees: dict[str, dict[str, np.ndarray]] = {"mask": {}, "rewind": {}, "trained": {}}
    for name, value in arrays.items():
        prefix, _, rest = name.partition(pruning.SEP)
        trees[prefix][rest] = value
    variables = {
        key: {"batch_stats": {}, **pruning.unflatten(trees[key])} for key in ("rewind", "trained")
    }
    return Ticket(
        pruning.unflatten(trees["mask"]),
        variables["rewind"],
        variables["trained"] if trees["trained"] else None,
        orjson.loads(text),
    )
