"""The store: a folder of runs, each a folder of finished cells. It is lt's cache.

Layout (``<root>`` is ``results/``, ``--store`` or ``$LT_STORE``)::

    <root>/<run id>/descriptor.json         the resolved descriptor, full and hashed forms
    <root>/<run id>/meta.json               experiment name, aliases, sweeps (not hashed)
    <root>/<run id>/replicate_<r>/init.npz  θ0 of the replicate (and rewind.npz: θk)
    <root>/<run id>/replicate_<r>/level_<L>/<member>/
        mask.npz      the cell's mask, bit-packed, prunable layers only
        weights.npz   trained weights (tickets only: the next level is pruned from them)
        metrics.json  evaluation curve and summary
        added-<sha>.json analyses measured after the cell was stored (`Store.add_to_metrics`)
        manifest.json sha256 of each file above; written last: a cell is finished iff present
    <root>/<run id>/checkpoints/level_<L>.npz   a level's group state while it trains
                                                (level_<L>_<digest>.npz: a cluster task's group)

Every file is written to a temporary name and renamed into place (`ltcli.core.atomic`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ltcli.core import atomic
from ltcli.core.errors import LtError, UsageError
from ltcli.experiment.descriptor import Descriptor
from ltcli.experiment.member import CellKey
from ltcli.science import pruning

MANIFEST = "manifest.json"
ADDED = "added-"
"""The name prefix of a finished cell's analyses measured after it was stored (a level barrier
that ``lt run --barriers`` measures on levels stored without it): ``added-<sha256[:16]>.json``,
named by its content, read as part of its metrics once its manifest lists it."""


def _added(manifest: dict[str, str]) -> str | None:
    """The additions file a cell's manifest lists, if any."""
    return next((name for name in manifest if name.startswith(ADDED)), None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_mask(mask: Any) -> dict[str, np.ndarray]:
    """The prunable layers of `mask`, each as packed bits plus its shape."""
    out = {}
    for name, m in pruning.flatten(mask).items():
        if pruning.layer_kind(name) is not None:
            out[name] = np.packbits(m.reshape(-1) > 0)
            out[f"{name}#shape"] = np.asarray(m.shape, np.int64)
    return out


def unpack_mask(packed: dict[str, np.ndarray], template: Any) -> Any:
    """Rebuilds a mask shaped like `template` (params); unlisted leaves are all ones."""
    flat = {}
    for name, leaf in pruning.flatten(template).items():
        if name in packed:
            shape = tuple(packed[f"{name}#shape"])
            bits = np.unpackbits(packed[name], count=int(np.prod(shape)))
            flat[name] = bits.astype(np.float32).reshape(shape)
        else:
            flat[name] = np.ones(leaf.shape, np.float32)
    return pruning.unflatten(flat)


def _npz_bytes(path: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(path.read_bytes())) as npz:
        return {k: npz[k] for k in npz.files}


class Store:
    """A store folder. Every method is safe to call on a store other processes also read."""

    writer = True
    """Whether this process writes the store (see `Follower`)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def follower(self) -> Store:
        """This store as a process of a multi-host job that is not its writer sees it."""
        return Follower(self.root)

    # -- runs ------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save_run(self, desc: Descriptor, experiment: str, name: str | None) -> None:
        """Records a run's descriptor (once) and adds `name` to its aliases."""
        folder = self.run_dir(desc.run_id)
        if not (folder / "descriptor.json").exists():
            record = {"run_id": desc.run_id, "hashed": desc.hashed, "full": desc.full}
            atomic.write_json(folder / "descriptor.json", record)
        meta = self.meta(desc.run_id) or {
            "experiment": experiment,
            "names": [],
            "created": time.time(),
        }
        if name and name not in meta["names"]:
            meta["names"].append(name)
        atomic.write_json(folder / "meta.json", meta)

    def meta(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id) / "meta.json"
        return atomic.read_json(path) if path.exists() else {}

    def descriptor(self, run_id: str) -> dict[str, Any]:
        """The stored descriptor record: ``{"run_id", "hashed", "full"}``."""
        return atomic.read_json(self.run_dir(run_id) / "descriptor.json")

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "descriptor.json").is_file())

    def resolve(self, ref: str) -> str:
        """The run id that `ref` names: an alias, else a prefix of an id, else the name of
        the experiment a run was first made from.

        Raises:
          UsageError: no run matches, or several do (they are listed).
        """
        ids = self.run_ids()
        metas = {i: self.meta(i) for i in ids}
        by_name = [i for i in ids if ref in metas[i].get("names", [])]
        by_experiment = [i for i in ids if metas[i].get("experiment") == ref]
        by_prefix = [i for i in ids if i.startswith(ref)]
        matches = by_name or by_prefix or by_experiment
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(
                f"run {ref!r}: no such run in {self.root} ({len(ids)} runs; see `lt ls`)"
            )
        listed = ", ".join(m[:12] for m in matches)
        raise UsageError(f"run {ref!r}: ambiguous, matches {listed}")

    # -- sweeps ----------------------------------------------------------------------------

    def add_sweep(self, run_id: str, entry: dict[str, Any]) -> None:
        """Records in the run's ``meta.json`` (under ``"sweeps"``) that it is a point of the
        sweep `entry` describes (``{"id", "name", "index", "points", "axes"}``, see
        `ltcli.experiment.sweep.entry`). A run may belong to several sweeps; recording the
        same entry again writes nothing."""
        meta = self.meta(run_id)
        recorded = meta.get("sweeps", [])
        if entry in recorded:
            return
        meta["sweeps"] = [*(s for s in recorded if s["id"] != entry["id"]), entry]
        atomic.write_json(self.run_dir(run_id) / "meta.json", meta)

    def sweeps(self) -> list[dict[str, Any]]:
        """The sweeps whose points are in the store, by name then id: each ``{"id", "name",
        "points" (how many the sweep has), "fields" (swept, in order), "runs" (the stored
        points' run ids, in the sweep's order)}``."""
        found: dict[str, dict[str, Any]] = {}
        for run_id in self.run_ids():
            for entry in self.meta(run_id).get("sweeps", []):
                sweep = found.setdefault(
                    entry["id"],
                    {
                        "id": entry["id"],
                        "name": entry["name"],
                        "points": entry["points"],
                        "fields": [a["field"] for a in entry["axes"]],
                        "runs": [],
                    },
                )
                sweep["runs"].append((entry["index"], run_id))
        for sweep in found.values():
            sweep["runs"] = [run_id for _, run_id in sorted(sweep["runs"])]
        return sorted(found.values(), key=lambda s: (s["name"], s["id"]))

    def resolve_sweep(self, ref: str) -> dict[str, Any] | None:
        """The sweep (as `sweeps` gives it) that `ref` names: its name, else a prefix of its
        id; None when none does.

        Raises:
          UsageError: several sweeps match (they are listed).
        """
        sweeps = self.sweeps()
        matches = [s for s in sweeps if s["name"] == ref] or [
            s for s in sweeps if s["id"].startswith(ref)
        ]
        if len(matches) > 1:
            listed = ", ".join(f"{s['id'][:12]} ({s['name']})" for s in matches)
            raise UsageError(f"sweep {ref!r}: ambiguous, matches {listed}")
        return matches[0] if matches else None

    def size_bytes(self, run_id: str) -> int:
        return sum(p.stat().st_size for p in self.run_dir(run_id).rglob("*") if p.is_file())

    # -- replicate starting points -----------------------------------------------------------

    def _replicate(self, run_id: str, replicate: int) -> Path:
        return self.run_dir(run_id) / f"replicate_{replicate}"

    def save_weights(self, path: Path, variables: dict[str, Any]) -> None:
        atomic.write_npz(path, pruning.flatten(variables))

    def load_weights(self, path: Path) -> dict[str, Any]:
        """Flax variables saved by `save_weights`; ``batch_stats`` is ``{}`` if there were none
        (an empty collection leaves no trace in the file)."""
        return {"batch_stats": {}, **pruning.unflatten(_npz_bytes(path))}

    def init_path(self, run_id: str, replicate: int) -> Path:
        return self._replicate(run_id, replicate) / "init.npz"

    def rewind_path(self, run_id: str, replicate: int) -> Path:
        return self._replicate(run_id, replicate) / "rewind.npz"

    # -- cells -------------------------------------------------------------------------------

    def cell_dir(self, run_id: str, cell: CellKey) -> Path:
        return self.run_dir(run_id) / cell.relpath

    def is_finished(self, run_id: str, cell: CellKey) -> bool:
        return (self.cell_dir(run_id, cell) / MANIFEST).is_file()

    def write_cell(
        self,
        run_id: str,
        cell: CellKey,
        mask: Any,
        metrics: dict[str, Any],
        weights: dict[str, Any] | None = None,
    ) -> None:
        """Stores a finished cell; its manifest goes last, so a crash leaves it unfinished."""
        folder = self.cell_dir(run_id, cell)
        atomic.write_npz(folder / "mask.npz", pack_mask(mask))
        atomic.write_json(folder / "metrics.json", metrics)
        names = ["mask.npz", "metrics.json"]
        if weights is not None:
            self.save_weights(folder / "weights.npz", weights)
            names.append("weights.npz")
        atomic.write_json(folder / MANIFEST, {n: _sha256(folder / n) for n in names})

    def add_to_metrics(self, run_id: str, cell: CellKey, fields: dict[str, Any]) -> None:
        """Adds `fields` to a finished cell's metrics, leaving the files it was stored with
        as they are: they and what earlier additions hold go into a new file named by its
        content (``added-<sha>.json``), then the manifest is rewritten to list it instead of
        the previous one, which is then removed. No file the manifest lists is ever
        rewritten, so a crash at any point, or two processes adding at once, leaves a
        manifest whose files all match it (the last manifest written wins; a file no
        manifest lists is never read). A cell stored again (``write_cell``) drops its
        additions: they are measured again when asked for."""
        folder = self.cell_dir(run_id, cell)
        manifest = atomic.read_json(folder / MANIFEST)
        previous = _added(manifest)
        added = atomic.read_json(self._verified(run_id, cell, previous)) if previous else {}
        data = atomic.json_bytes({**added, **fields})
        digest = hashlib.sha256(data).hexdigest()
        name = f"{ADDED}{digest[:16]}.json"
        atomic.write_bytes(folder / name, data)
        listed = {k: v for k, v in manifest.items() if k != previous}
        atomic.write_json(folder / MANIFEST, {**listed, name: digest})
        if previous and previous != name:
            (folder / previous).unlink(missing_ok=True)

    def _verified(self, run_id: str, cell: CellKey, name: str) -> Path:
        folder = self.cell_dir(run_id, cell)
        manifest = atomic.read_json(folder / MANIFEST)
        path = folder / name
        if name not in manifest or _sha256(path) != manifest[name]:
            raise LtError(
                f"{path}: missing or does not match its manifest; delete "
                f"{folder} to retrain the cell"
            )
        return path

    def read_metrics(self, run_id: str, cell: CellKey) -> dict[str, Any]:
        """A finished cell's metrics, checked against its manifest like its arrays, with
        what `add_to_metrics` added to them."""
        metrics = atomic.read_json(self._verified(run_id, cell, "metrics.json"))
        if added := _added(atomic.read_json(self.cell_dir(run_id, cell) / MANIFEST)):
            metrics.update(atomic.read_json(self._verified(run_id, cell, added)))
        return metrics

    def read_mask(self, run_id: str, cell: CellKey, template: Any) -> Any:
        return unpack_mask(_npz_bytes(self._verified(run_id, cell, "mask.npz")), template)

    def read_trained(self, run_id: str, cell: CellKey) -> dict[str, Any]:
        return self.load_weights(self._verified(run_id, cell, "weights.npz"))

    def finished_cells(self, run_id: str) -> Iterator[CellKey]:
        """Every finished cell of a run, in (replicate, level, member) order."""
        found = self.run_dir(run_id).glob(f"replicate_*/level_*/*/{MANIFEST}")
        yield from sorted(CellKey.from_relpath(manifest.parent) for manifest in found)

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Holds the run for this process: a second process training it fails at once.

        Raises:
          LtError: another process holds the run.
        """
        with self.try_lock(run_id) as held:
            if not held:
                raise LtError(
                    f"run {run_id[:12]} is being trained by another lt process; "
                    "wait for it to finish (its cells are kept), then run again"
                )
            yield

    @contextlib.contextmanager
    def try_lock(self, run_id: str, create: bool = True) -> Iterator[bool]:
        """Holds the run unless another process does; yields whether this process holds it.

        Without `create`, a run that has no lock file (it was never trained) counts as held,
        and no file is made.
        """
        path = self.run_dir(run_id) / ".lock"
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+" if create else "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            yield True
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_path(self, run_id: str, name: str) -> Path:
        """A training group's checkpoint (``level_<L>``, or a group of deferred controls)."""
        return self.run_dir(run_id) / "checkpoints" / f"{name}.npz"

    def clear_checkpoint(self, run_id: str, name: str) -> None:
        self.checkpoint_path(run_id, name).unlink(missing_ok=True)


class Follower(Store):
    """A store read by a process of a multi-host job (`ltcli.core.hosts`) whose writes
    process 0 makes: the same calls arrive in every process, and only the writer's reach
    the disk (nor does a follower hold the run's lock, which the writer holds for the job).
    What a follower reads, the writer wrote before the barrier at which both wait
    (`ltcli.storage.writer.RunStore.sync`)."""

    writer = False

    def save_run(self, desc: Descriptor, experiment: str, name: str | None) -> None:
        pass

    def add_sweep(self, run_id: str, entry: dict[str, Any]) -> None:
        pass

    def save_weights(self, path: Path, variables: dict[str, Any]) -> None:
        pass

    def write_cell(
        self,
        run_id: str,
        cell: CellKey,
        mask: Any,
        metrics: dict[str, Any],
        weights: dict[str, Any] | None = None,
    ) -> None:
        pass

    def add_to_metrics(self, run_id: str, cell: CellKey, fields: dict[str, Any]) -> None:
        pass

    def clear_checkpoint(self, run_id: str, name: str) -> None:
        pass

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        yield
