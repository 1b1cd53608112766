"""How a level's cells share one program: side by side (``vmap``) or one after another
(``serial``, a loop inside the program). Measured on this machine, not assumed.

Which is faster depends on the model and the device: vmap wins big for dense networks on a
GPU and does nothing on a 2-core CPU, while vmapped convolutions become grouped convolutions
that ran slower than one cell at a time on an H200. The first time a model trains a group of
a given size on a device, both groupings train it for one evaluation period after a warm-up
call, on throwaway copies, and the faster is remembered in lt's cache folder. The numbers
agree to float rounding whichever is chosen (the programs differ, so the last bits can);
each cell's metrics record the grouping it trained with.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax

from ltcli import models
from ltcli.core import atomic, hosts, paths
from ltcli.train.device_data import DeviceData
from ltcli.train.engine import Engine, Group
from ltcli.train.feeders import Feeder, OnDevice

GROUPINGS = ("vmap", "serial")
"""The groupings `choose` measures. The host loop is not among them: it is a feeder, chosen
once for the run (`ltcli.train.feeders.HostLoop`)."""
PROBE_STEPS = 10


def _cache_file() -> Path:
    return paths.cache_dir() / "groupings.json"


def needs_host_loop(kinds: tuple[str, ...], platform: str) -> bool:
    """Whether a model must train with the ``host`` grouping: convolutions on a CPU, which
    XLA runs ~17x slower inside a loop body (Conv-2 here: 24 s a step in a scan, 1.4 s
    dispatched one step at a time; jax#12868)."""
    return platform == "cpu" and "conv" in kinds


def machine_key(model_name: str, engine: Engine, cells: int, image_shape: tuple) -> str:
    """What a measurement is valid for: device, model, batch, input shape and group size."""
    device = jax.devices()[0]
    shape = "x".join(map(str, image_shape))
    spread = f"|{engine.parallel} over {engine.devices}" if engine.devices > 1 else ""
    return (
        f"{device.platform}:{device.device_kind}|{model_name}|"
        f"batch {engine.cfg.batch_size}|{shape}|{cells} cells{spread}"
    )


def seconds_per_period(engine: Engine, group: Group, data: DeviceData) -> float:
    """Wall time of one evaluation period of `group` once compiled (consumes `group`)."""
    group, metrics = engine.segment(group, 0, 1, data)
    metrics.block_until_ready()
    started = time.perf_counter()
    _, metrics = engine.segment(group, engine.cfg.eval_every, 1, data)
    metrics.block_until_ready()
    return time.perf_counter() - started


def choose(
    key: str,
    engine: Engine,
    fresh_group: Callable[[], Group],
    data: DeviceData,
    groupings: tuple[str, ...] = GROUPINGS,
) -> str:
    """The fastest of `groupings` for `key`, measured once and then read from the cache.

    Args:
      key: see `machine_key`.
      engine: the engine the level will train with (its grouping is ignored).
      fresh_group: builds a group like the level's (called once per grouping).
      data: the data set on the device.
      groupings: the candidates.
    """
    known = _known()
    if key not in known:
        # Short periods: the comparison needs a few steps and one evaluation, not a full one.
        cfg = dataclasses.replace(engine.cfg, eval_every=min(engine.cfg.eval_every, PROBE_STEPS))
        timings = {}
        for grouping in groupings:
            try:
                probe = dataclasses.replace(engine, cfg=cfg, grouping=grouping, segment_evals=1)
                timings[grouping] = seconds_per_period(probe, fresh_group(), data)
            except jax.errors.JaxRuntimeError:  # out of memory, say: the other one it is
                timings[grouping] = float("inf")
        known = _known()
        known[key] = {"choice": min(timings, key=timings.get), "seconds": timings}
        atomic.write_json(_cache_file(), known)
    return known[key]["choice"]


def pick(
    model_name: str,
    engine: Engine,
    cells: int,
    image_shape: tuple,
    fresh_group: Callable[[], Group],
    feeder: Feeder,
) -> str:
    """The grouping for `cells` cells of `model_name` on this machine: ``host`` where it
    `needs_host_loop` (the run's feeder is then `ltcli.train.feeders.HostLoop`, or streamed
    data steps one cell at a time), ``serial`` for a deterministic engine (every cell the
    same one-cell program), the engine's own for a lone cell (it trains without batching or
    a loop), else the faster of `GROUPINGS` as `choose` measures it (streamed data: ``vmap``
    unmeasured, since each probe would read the evaluation sets from disk; in a multi-host
    job, ``vmap`` too, since timings could differ between the processes)."""
    if needs_host_loop(models.get(model_name).kinds, jax.default_backend()):
        return "host"
    if engine.deterministic:
        return "serial"
    if cells == 1:
        return engine.grouping
    if not isinstance(feeder, OnDevice):  # a probe would read the evaluation sets: vmap
        return "vmap"
    if hosts.count() > 1:  # every process must run the same program: none is timed
        return "vmap"
    key = machine_key(model_name, engine, cells, image_shape)
    return choose(key, engine, fresh_group, feeder.data)


def _known() -> dict:
    """The remembered choices; an unreadable file counts as none."""
    try:
        return dict(atomic.read_json(_cache_file()))
    except (OSError, ValueError):
        return {}
