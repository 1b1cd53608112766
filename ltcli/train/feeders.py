"""How batches reach the training step: one `Feeder` per run, chosen once where its context
is built (`ltcli.train.context.RunContext.feeder`).

- `OnDevice`: the data set lives on the device and each cell's batches are drawn there,
  inside the engine's program (`ltcli.train.engine.Engine.segment`: one `lax.scan` per
  segment).
- `HostLoop`: the data set lives on the device, but Python steps each cell a few steps a
  call, for convolutions on a CPU, which XLA runs many times slower inside a loop body than
  at the top level (jax#12868), or where `--grouping host` asks for it.
- `ltcli.train.streaming.StreamData`: a data set too large for the device is read from the
  host, batch by batch, as training asks for it; the same batches, bit for bit (with the
  ``host`` grouping one cell at a time, one step a call).

Training, the error paths of instability analysis and the batch-norm sample they need all
go through the run's feeder; only `ltcli.train.grouping.pick` asks which it is (its probes
time training on the device).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ltcli.core.pytrees import Mask
from ltcli.models.layers import BN_MOMENTUM
from ltcli.science import interpolation
from ltcli.train.device_data import DeviceData, standardized
from ltcli.train.engine import Engine, Group, stack


class Feeder(abc.ABC):
    """Where a run's examples come from, and so how its groups train and evaluate."""

    @abc.abstractmethod
    def segment(
        self, engine: Engine, group: Group, step0: int, evals: int, rewind_at: int = 0
    ) -> tuple[Group, jax.Array]:
        """`Engine.segment` on this feeder's batches: trains `group` for `evals` evaluation
        periods from iteration `step0`; the advanced group and its metrics (cells, evals, 4)."""

    @property
    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """The training examples' labels (class-balanced samples draw from them)."""

    @abc.abstractmethod
    def images(self, ids: np.ndarray) -> jax.Array:
        """The normalized training examples `ids` as evaluation reads them (no
        augmentation): the batch-norm sample of a path."""

    @abc.abstractmethod
    def test_path(
        self,
        engine: Engine,
        a: dict[str, Any],
        b: dict[str, Any],
        mask: Mask,
        bn_x: Any,
        points: int,
    ) -> dict[str, Any]:
        """Test loss and error at `points` points from network `a` to network `b` under
        `mask` (`ltcli.science.interpolation.path`), batch norm recomputed on `bn_x`."""


@dataclasses.dataclass(frozen=True)
class OnDevice(Feeder):
    """The data set on the device: batches are drawn inside the engine's program.

    Attributes:
      data: the data set, on every device of the engine's mesh (`Engine.place_data`).
    """

    data: DeviceData

    def segment(
        self, engine: Engine, group: Group, step0: int, evals: int, rewind_at: int = 0
    ) -> tuple[Group, jax.Array]:
        return engine.segment(group, step0, evals, self.data, rewind_at)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.data.y_train)

    def images(self, ids: np.ndarray) -> jax.Array:
        return standardized(self.data.x_train[jnp.asarray(ids)], self.data)

    def test_path(
        self,
        engine: Engine,
        a: dict[str, Any],
        b: dict[str, Any],
        mask: Mask,
        bn_x: Any,
        points: int,
    ) -> dict[str, Any]:
        """Every point of the path in one program (`interpolation.path`)."""
        return interpolation.path(
            engine.evaluate_test,
            engine.model,
            a,
            b,
            mask,
            self.data,
            bn_x,
            bn_momentum=BN_MOMENTUM,
            points=points,
        )


@dataclasses.dataclass(frozen=True)
class HostLoop(OnDevice):
    """The data set on the device, the loop in Python: each cell in turn, `UNROLL` steps a
    call (`ltcli.train.engine.Engine.steps`), then its evaluation as a call of its own. The
    batches, steps and evaluations are those of `OnDevice`, so the numbers agree to float
    rounding."""

    UNROLL = 4
    """Steps per call. Unrolled in one program, consecutive steps cost one dispatch and XLA
    overlaps one step's optimizer update with the next step's work: Conv-2 and ResNet-20
    trained 15-20% faster on a 2-core CPU than at one step a call."""

    def segment(
        self, engine: Engine, group: Group, step0: int, evals: int, rewind_at: int = 0
    ) -> tuple[Group, jax.Array]:
        every = engine.cfg.eval_every
        cells, curves = [], []
        for i in range(group.data_key.shape[0]):
            cell = jax.tree.map(lambda x, i=i: x[i], group)
            if not rewind_at:
                cell = cell._replace(rewind=None)
            ids = engine.period_indices(cell, jnp.asarray(step0, jnp.int32), self.data, evals)
            metrics = []
            for period in range(evals):
                for k in range(0, every, self.UNROLL):
                    t = jnp.asarray(step0 + period * every + k, jnp.int32)
                    cell = engine.steps(cell, t, ids[period, k : k + self.UNROLL], self.data)
                step = jnp.asarray(step0 + (period + 1) * every, jnp.int32)
                cell, row = engine.end_of_period(cell, step, self.data, rewind_at)
                metrics.append(row)
            cells.append(cell)
            curves.append(jnp.stack(metrics))
        return stack(cells), jnp.stack(curves)
