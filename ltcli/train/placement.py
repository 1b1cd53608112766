"""Where a group of cells and its batches lie over the local devices: the mesh, the cell
axis split over it (``run.parallel = cells``) or each cell's batch split over it
(``batch``). `ltcli.train.engine.Engine` places its groups and data through these."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ltcli.train.device_data import DeviceData


class Placement:
    """The placement of an engine's groups: `devices` local devices along one axis, and
    `parallel` (``cells`` or ``batch``) saying what is split over them."""

    devices: int
    parallel: str

    def mesh(self) -> Mesh:
        """The first `devices` local devices along one axis: ``cells``, or ``batch`` when
        every cell's batch is split over them (`parallel`). In a multi-host job
        (`ltcli.core.hosts`), every device of every process."""
        devices = jax.devices() if jax.process_count() > 1 else jax.local_devices()
        return Mesh(np.asarray(devices[: self.devices]), (self._axis,))

    @property
    def _axis(self) -> str:
        return "batch" if self.parallel == "batch" else "cells"

    def _split_batch(self, tree: Any) -> Any:
        """`tree` (one cell's examples along axis 0) laid out over the mesh's ``batch`` axis,
        where `parallel` is ``batch``: XLA then computes each device's share of the batch and
        reduces across devices where the cell needs the whole batch (the loss, its gradient,
        batch norm's statistics: over the global batch). The numbers are the one-device
        numbers up to the order of float additions."""
        return self._laid_out(tree, P("batch"))

    def _replicated(self, tree: Any) -> Any:
        """`tree` whole on every device, where `parallel` is ``batch``: what a split batch
        left split (the first batch's ids) is gathered, so that every process of a
        multi-host job can read every result (`ltcli.core.hosts`)."""
        return self._laid_out(tree, P())

    def _laid_out(self, tree: Any, spec: P) -> Any:
        """Every leaf of `tree` constrained to `spec` over the mesh where `parallel` is
        ``batch`` (as it is elsewhere)."""
        if self.parallel != "batch" or self.devices == 1:
            return tree
        sharding = NamedSharding(self.mesh(), spec)
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    def place_data(self, data: DeviceData) -> DeviceData:
        """`data` replicated on every device of the mesh (as is with one device)."""
        if self.devices == 1:
            return data
        return jax.device_put(data, NamedSharding(self.mesh(), P()))

    def place_group(self, group: Any) -> Any:
        """`group` (`ltcli.train.engine.Group`) padded to a multiple of `devices` cells
        (copies of its last cell) and split along the cell axis over the mesh."""
        if self.devices == 1:
            return group
        if self.parallel == "batch":  # every device holds every cell: parameters replicated
            return jax.device_put(group, NamedSharding(self.mesh(), P()))
        cells = group.data_key.shape[0]
        pad = -cells % self.devices

        def padded(x: jax.Array) -> jax.Array:
            return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x

        return jax.device_put(jax.tree.map(padded, group), NamedSharding(self.mesh(), P("cells")))
