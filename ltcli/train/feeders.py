"""How batches reach the training step: one `Feeder` per run, chosen once where its context
is built (`ltcli.train.context.RunContext.feeder`).

- `OnDevice`: the data set lives on the device and each cell's batches are drawn there,
  inside the engine's program (`ltcli.train.engine.Engine.segment`: one `lax.scan` per
  segment, or with the ``host`` grouping a Python loop of a few steps a call).
- `ltcli.train.streaming.StreamData`: a data set too large for the device is read from the
  host, batch by batch, as training asks for it; the same batches, bit for bit.

Training, the error paths of instability analysis and the batch-norm sample they need all
go through the run's feeder; only `ltcli.train.grouping.pick` asks whether it is `OnDevice`
(its probes time training there). The ``host`` loop is a grouping, not a feeder: a level
picks it (measured, for a transformer on one device) after the feeder is chosen, and
streamed batches honour it too (one cell, one step a call).
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
from ltcli.train.engine import Engine, Group


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
