"""What the pieces of one run share: its store, descriptor, data source and model, and the
engine and the feeder of its batches (data on the device, or read from the host), built on
first use (a run with nothing to train loads no data and compiles nothing)."""

from __future__ import annotations

import math
import os
from typing import Any

import jax

from ltcli import data, models
from ltcli.core import hosts
from ltcli.experiment.descriptor import ARCH_FIELDS, Descriptor, one_shot_targets
from ltcli.models.flop_trace import layer_flops
from ltcli.science import pruning
from ltcli.science.methods import DATA_METHODS
from ltcli.storage.store import Store
from ltcli.storage.writer import RunStore
from ltcli.train.device_data import (
    DeviceData,
    text_scored,
    to_device,
    to_device_text,
)
from ltcli.train.engine import Engine
from ltcli.train.feeders import Feeder, HostLoop, OnDevice
from ltcli.train.grouping import needs_host_loop
from ltcli.train.recipes import TrainConfig
from ltcli.train.summary import TextScored

SEGMENT_ITERATIONS = 1000
"""About this many iterations run per jitted call; progress and checkpoints come between."""


def host_loop(grouping: str, model_name: str) -> bool:
    """Whether groups train in the ``host`` loop (convolutions on a CPU), which steps one
    cell at a time on one device."""
    kinds = models.get(model_name).kinds
    return grouping == "host" or (
        grouping == "auto" and needs_host_loop(kinds, jax.default_backend())
    )


def local_devices(requested: int, grouping: str, model_name: str) -> int:
    """How many local devices a run's groups are sharded over: `requested` (0: all that JAX
    sees), at most as many as there are, and one in the ``host`` loop (`host_loop`). In a
    multi-host job (`ltcli.core.hosts`), every device of every process."""
    if hosts.joined():
        return jax.device_count()
    available = jax.local_device_count()
    return 1 if host_loop(grouping, model_name) else min(requested or available, available)


def strategy(full: dict[str, Any]) -> pruning.Strategy:
    """The pruning strategy of a descriptor's full form (one-shot targets largest first;
    an N:M pattern prunes layer by layer, its rates unused)."""
    prune = full["prune"]
    targets = one_shot_targets(full)
    pattern = pruning.parse_pattern(prune.get("pattern", pruning.UNSTRUCTURED))
    kind, rates = prune.get("strategy", "layerwise"), prune.get("rates", {})
    return pruning.Strategy(kind, rates, tuple(prune["exclude"]), targets, pattern)


def architecture(full: dict[str, Any]) -> dict[str, Any]:
    """A descriptor's model architecture options (``model.depth`` ...; none for CNNs)."""
    return {k: v for k, v in full["model"].items() if k in ARCH_FIELDS}


def streams(source: data.DataSource, placement: str) -> bool:
    """Whether a data set's training data streams from the host (`ltcli.train.streaming`):
    ``data.placement``, or with ``auto`` a data set that only streams (ImageNet) or whose
    images would take more than half of the device's memory."""
    known = known_streams(source, placement)
    if known is not None:
        return known
    stats = jax.local_devices()[0].memory_stats() or {}
    size = source.train_size * math.prod(source.image_shape)
    return "bytes_limit" in stats and size > stats["bytes_limit"] / 2


def known_streams(source: data.DataSource, placement: str) -> bool | None:
    """`streams` where ``data.placement`` and the data set decide it, before JAX starts;
    None where it depends on the device's memory."""
    if placement != "auto":
        return placement == "stream"
    return True if source.streamed is not None else None


def stream_refusal(desc: Descriptor, source: data.DataSource) -> str | None:
    """Why a run cannot train on streamed data, or None."""
    if source.text:
        return "data.placement: text lives on the device (it is small); leave it auto"
    if desc["prune.method"] in DATA_METHODS:
        return (
            f"prune.method: {desc['prune.method']} scores one batch of 10 examples per "
            "class, which lt reads only from data on the device; streamed data sets "
            "take magnitude, synflow, magnitude-init or random"
        )
    return None


def execution_refusal(
    desc: Descriptor,
    source: data.DataSource,
    *,
    placement: str,
    parallel: str,
    devices: int,
    grouping: str,
    deterministic: bool,
) -> str | None:
    """Why a run cannot train this way (checked before anything is written), or None."""
    if hosts.joined() and (refused := _distributed_refusal(desc, grouping)):
        return refused
    if streams(source, placement) and (refused := stream_refusal(desc, source)):
        return refused
    if parallel == "batch":
        if deterministic:
            return (
                "--parallel batch: a deterministic cell trains the same one-device program "
                "in any group; splitting its batch over devices changes its additions"
            )
        count = local_devices(devices, grouping, desc["model.name"])
        if desc["train.batch_size"] % count:
            return (
                f"--parallel batch: train.batch_size ({desc['train.batch_size']}) must "
                f"divide evenly over the {count} devices (--devices)"
            )
    return None


def _distributed_refusal(desc: Descriptor, grouping: str) -> str | None:
    """Why a multi-host job cannot train this run, or None: each group's batch is split
    over every device of every process. Only what needs the job's devices, known once its
    processes met (`jax.distributed.initialize`), is refused here; the rest is refused
    before they meet (`ltcli.train.launch.job_refusal`)."""
    if host_loop(grouping, desc["model.name"]):
        return (
            "--distributed: convolutions on a CPU train one step per call on one device "
            "(the host loop); a multi-host job needs GPUs for them, or a model without "
            "convolutions"
        )
    if desc["train.batch_size"] % jax.device_count():
        return (
            f"--distributed: train.batch_size ({desc['train.batch_size']}) must divide "
            f"evenly over the job's {jax.device_count()} devices"
        )
    return None


class RunContext:
    """One run's store, descriptor, data source, model and training configuration.

    Attributes:
      view: the run's cells in the store, written in the background (`RunStore`).
      cfg: the training hyperparameters.
      strategy: how levels prune.
      model: the Flax module.
      devices: the local devices a group is sharded over (`local_devices`).
    """

    def __init__(
        self,
        store: Store,
        desc: Descriptor,
        source: data.DataSource,
        grouping: str = "auto",
        deterministic: bool = False,
        devices: int = 0,
        parallel: str = "auto",
        placement: str = "auto",
        workers: int = -1,
    ):
        self.store, self.desc, self.source = store, desc, source
        self.grouping, self.deterministic = grouping, deterministic
        self.view = RunStore(store, desc.run_id)
        self.cfg = TrainConfig.of(desc.full["train"])
        self.strategy = strategy(desc.full)
        self.arch = architecture(desc.full)
        self.model = models.create(
            desc["model.name"], source.num_classes, desc["model.dropout"], self.arch
        )
        self.context = self.arch.get("context", 0) if source.text else 0
        self.input_shape = models.get(desc["model.name"]).input_shape(source.image_shape, self.arch)
        self.scored: TextScored | None = None
        self.devices = local_devices(devices, grouping, desc["model.name"])
        self.parallel = parallel
        self.placement = placement
        self.workers = workers
        self._engine: Engine | None = None
        self._data: DeviceData | None = None
        self._feeder: Feeder | None = None

    @property
    def run_id(self) -> str:
        return self.desc.run_id

    @property
    def layer_flops(self) -> dict[str, float]:
        """Each layer's dense forward FLOPs for one example (`ltcli.models.flop_trace`)."""
        name, source = self.desc["model.name"], self.source
        return layer_flops(name, source.image_shape, source.num_classes, self.arch)

    def start_step(self, level: int) -> int:
        """The iteration a level's cells start at: 0 for the dense level, else the rewind
        iteration k (0 without late rewinding). Every cell trains to T."""
        return self.desc["prune.rewind_iter"] if level > 0 else 0

    @property
    def engine(self) -> Engine:
        """The engine (its grouping is set per level), built on first use."""
        if self._engine is None:
            segment = self.segment_evals((self.start_step(1),))
            self._engine = Engine(
                self.model,
                self.cfg,
                "vmap",
                segment,
                self.deterministic,
                self.devices,
                self.context,
            )
        return self._engine

    def reading_workers(self) -> int:
        """Processes that decode streamed data (``data.workers``; -1: none for arrays
        already in memory or on 4 cores or fewer, where grain's reading threads in this
        process were fastest, `make bench`; else half the cores, at most 8)."""
        if self.workers >= 0:
            return self.workers
        cores = os.cpu_count() or 1
        if self.source.streamed is None or cores <= 4:
            return 0
        return min(8, cores // 2)

    def streams(self) -> bool:
        """Whether the training data streams from the host (`streams`)."""
        return streams(self.source, self.placement)

    def parallel_for(self, cells: int) -> str:
        """How a group of `cells` cells uses the devices: ``cells`` (split among them) or
        ``batch`` (each cell's batch split over all); ``auto`` splits batches when there are
        fewer cells than devices and the batch divides evenly, so no device idles."""
        if self.parallel != "auto":
            return self.parallel
        if hosts.joined():  # one cell over many hosts (`ltcli.core.hosts`)
            return "batch"
        if self.deterministic:  # a cell's numbers must not depend on its group's size
            return "cells"
        even = self.cfg.batch_size % self.devices == 0
        return "batch" if self.devices > 1 and cells < self.devices and even else "cells"

    def segment_evals(self, boundaries: tuple[int, ...]) -> int:
        """Evaluation periods per jitted call: at most `SEGMENT_ITERATIONS` iterations, and a
        divisor of every stretch between T and the iterations in `boundaries` (a level's
        start k, spawn points), so every level runs one compiled program and every spawn
        point falls between two calls."""
        every = self.cfg.eval_every
        evals = math.gcd(self.cfg.iterations // every, *(b // every for b in boundaries))
        per_call = max(1, SEGMENT_ITERATIONS // every)
        return max(d for d in range(1, min(evals, per_call) + 1) if evals % d == 0)

    @property
    def feeder(self) -> Feeder:
        """How batches reach the step, chosen once: read from the host as training asks for
        them (`streams`: `ltcli.train.streaming.StreamData`), else drawn from `data` on the
        device, inside the engine's program (`OnDevice`) or stepped from Python (`HostLoop`,
        where `host_loop`)."""
        if self._feeder is None and self.streams():
            from ltcli.train import streaming  # only when a data set streams

            self._feeder = streaming.put(
                self.source, self.desc["data.validation"], self.reading_workers()
            )
        if self._feeder is None:
            host = host_loop(self.grouping, self.desc["model.name"])
            self._feeder = (HostLoop if host else OnDevice)(self.data)
        return self._feeder

    @property
    def data(self) -> DeviceData:
        """The data set on the device (every device of the mesh), loaded on first use; what
        a run whose data does not stream (`feeder`) trains on."""
        if self._data is None:
            loaded = self.source.load()
            if self.context:
                self.scored = text_scored(loaded, self.desc["data.validation"], self.context)
                arrays = to_device_text(loaded, self.desc["data.validation"], self.context)
            else:
                arrays = to_device(loaded, self.desc["data.validation"])
            self._data = self.engine.place_data(arrays)
        return self._data
