"""Progress on stderr, driven by a fake clock: a log file gets a line when a level starts,
one every `every` seconds, and the level's finish line; a terminal gets one line redrawn in
place; downloads are drawn by the same `Meter`, in the same format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ltcli.cli.progress import CliProgress
from ltcli.core import meter as progressing
from ltcli.core.meter import Meter
from ltcli.data import fetch
from ltcli.storage.store import CellKey

pytestmark = pytest.mark.unit

LINE = re.compile(
    r"(?P<label>.+?)  (?P<done>[\d,.]+)(?:/(?P<total>[\d,.]+))? (?P<unit>\w+)  "
    r"(?P<rate>[\d,.]+) (?P=unit)/s  ETA (?P<eta>\d+:\d\d(?::\d\d)?|--:--)"
)
"""A meter's status line: LABEL  DONE/TOTAL UNIT  RATE UNIT/s  ETA M:SS."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_file_gets_a_start_line_periodic_lines_and_a_finish_line(capsys) -> None:
    clock = FakeClock()
    progress = CliProgress(3, every=10, clock=clock)  # stderr is captured: not a terminal
    progress.level(1, [CellKey(r, 1) for r in range(4)], total_steps=1000, start=200)
    for _ in range(8):  # 100 iterations every 4 s: 25 it/s, due lines at 12 s and 24 s
        clock.now += 4
        progress.advance(100)
    progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    fields = [LINE.fullmatch(line) for line in lines[:3]]
    assert all(fields), lines
    assert {f["label"] for f in fields} == {"level 1/3  4 cells"}
    assert [(f["done"], f["total"], f["unit"]) for f in fields] == [
        ("200", "1,000", "it"),
        ("500", "1,000", "it"),
        ("800", "1,000", "it"),
    ]
    # the rate leaves out the 200 iterations resumed from a checkpoint
    assert [(f["rate"], f["eta"]) for f in fields] == [
        ("0", "--:--"),
        ("25", "0:20"),
        ("25", "0:08"),
    ]
    assert lines[3] == "level 1: 4 cells x 1,000 iterations in 32.0 s (25 it/s)"


def test_the_interval_is_every_seconds(capsys) -> None:
    clock = FakeClock()
    progress = CliProgress(1, every=60, clock=clock, live=False)
    progress.level(0, [CellKey(0, 0)], total_steps=10_000, start=0)
    for _ in range(100):  # 3 s apart: 300 s in all, a line due each 60 s
        clock.now += 3
        progress.advance(100)
    progress.finish()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 + 4 + 1, lines  # not at 300 s: the work is complete, finish follows
    assert lines[4] == "level 0/1  1 cells  8,000/10,000 it  33 it/s  ETA 1:00"


def test_a_terminal_gets_one_line_redrawn_in_place(capsys) -> None:
    clock = FakeClock()
    progress = CliProgress(2, every=60, clock=clock, live=True)
    progress.level(2, [CellKey(0, 2), CellKey(1, 2)], total_steps=1000, start=0)
    for _ in range(10):  # redrawn every REDRAW (0.2 s), not on every step: 5 times in 1.5 s
        clock.now += 0.15
        progress.advance(50)
    progress.note("note: something")
    clock.now += 0.5
    progress.advance(0)
    progress.finish()
    err = capsys.readouterr().err.replace("\033[K", "")  # click drops it off a terminal
    assert err.count("\n") == 3  # one ends the live line before the note, the note, the finish
    draws = [d for d in re.split(r"[\r\n]", err) if d.startswith("level 2/2")]
    assert len(draws) == 1 + 5 + 1
    assert all(LINE.fullmatch(d) for d in draws), draws
    after_note = err.split("\nnote: something\n")[1]
    assert after_note.endswith("\rlevel 2: 2 cells x 1,000 iterations in 2.0 s (250 it/s)\n")


def test_a_download_is_drawn_by_the_same_meter(capsys) -> None:
    clock = FakeClock()
    meter = fetch._progress("mnist: a.gz", 1_000_000, 9_000_000, clock=clock, every=10)
    assert isinstance(meter, Meter)
    for _ in range(4):
        clock.now += 5
        meter.add(1_000_000)
    meter.close()
    lines = capsys.readouterr().err.splitlines()
    fields = [LINE.fullmatch(line) for line in lines[:-1]]
    assert all(fields) and len(lines) == 4, lines
    assert [(f["done"], f["total"], f["unit"], f["rate"], f["eta"]) for f in fields] == [
        ("1.0", "9.0", "MB", "0.0", "--:--"),
        ("3.0", "9.0", "MB", "0.2", "0:30"),
        ("5.0", "9.0", "MB", "0.2", "0:20"),
    ]
    assert lines[-1] == "mnist: a.gz  5.0 MB in 20.0 s  0.2 MB/s"


def test_a_real_download_prints_meter_lines(tmp_path: Path, capsys) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(bytes(300_000))
    part = tmp_path / ".file.bin.part"
    fetch._download(source.as_uri(), part, "mnist: file.bin")
    assert part.read_bytes() == source.read_bytes()
    lines = capsys.readouterr().err.splitlines()
    first = LINE.fullmatch(lines[0])
    assert first and (first["label"], first["done"], first["total"]) == (
        "mnist: file.bin",
        "0.0",
        "0.3",
    )
    assert re.fullmatch(r"mnist: file\.bin  0\.3 MB in [\d.]+ s  [\d,.]+ MB/s", lines[-1])


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (65, "1:05"), (3723, "1:02:03"), (59.6, "1:00")]
)
def test_clock_text(seconds: float, text: str) -> None:
    assert progressing._clock(seconds) == text


@pytest.mark.integration
def test_every_stored_group_is_announced_once_on_disk_when_flushed(class_folder, tmp_path):
    from ltcli.experiment import plan as planning
    from ltcli.experiment import spec
    from ltcli.storage.store import Store
    from ltcli.train import launch

    class Stored(planning.Progress):
        def __init__(self):
            self.seen = []

        def stored(self, cells, flush):
            flush()
            self.seen.append([(c, store.is_finished(run_id_of(), c)) for c in cells])

    table = {
        "data": {"dataset": f"folder:{class_folder}", "validation": 50},
        "model": {"name": "lenet300"},
        "train": {"iterations": "100it", "eval_every": "100it", "batch_size": 20},
        "run": {"rounds": 2, "controls": "reinit:1"},
    }
    loaded = spec.from_mapping("events", table)
    store = Store(tmp_path)
    run_id_of = lambda: launch.prepare(loaded)[0].run_id  # noqa: E731
    first, second = Stored(), Stored()
    launch.run(loaded, store, progress=planning.Fanout(first, second))
    assert first.seen == second.seen
    assert [[str(c.member) for c, _ in group] for group in first.seen] == [
        ["ticket"],
        ["ticket", "reinit-0"],
        ["ticket", "reinit-0"],
    ]
    assert all(done for group in first.seen for _, done in group)
