"""`lt plot`, `lt reproduce`, `lt export` and `lt ticket` check their output path before
anything runs: a suffix they cannot write, a folder that is missing, not a folder or not
writable, or a folder as the file exit 2 with a one-line message naming the path, having
loaded, trained and written nothing.

Nothing here trains or reads a store: the library functions each command would call are
replaced by recorders, so a refusal is proven by their never being called."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ltcli.cli import outputs
from ltcli.cli.main import cli
from ltcli.core.errors import LtError
from ltcli.results import export, plot, ticket
from ltcli.storage.store import Store
from ltcli.train import launch

pytestmark = pytest.mark.unit

RUN_ID = "a" * 64

# Each command with OUT where its output path goes, and a suffix it writes.
COMMANDS = {
    "plot": (["plot", "alpha", "-o", "OUT"], ".png"),
    "reproduce": (["reproduce", "lenet", "--budget", "small", "-o", "OUT"], ".png"),
    "export": (["export", "-o", "OUT"], ".csv"),
    "ticket": (["ticket", "alpha", "--level", "1", "-o", "OUT"], ".npz"),
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the loading, training and writing functions called, in order. Store
    look-ups return a fake run; the rest raise `LtError("stub")` (exit 1) once recorded."""
    called: list[str] = []

    def stub(name: str):
        def record(*args, **kwargs):
            called.append(name)
            raise LtError(f"stub {name}")

        return record

    def resolve(self, ref):
        called.append("Store.resolve")
        return RUN_ID

    def run_ids(self):
        called.append("Store.run_ids")
        return [RUN_ID]

    monkeypatch.setattr(Store, "resolve", resolve)
    monkeypatch.setattr(Store, "run_ids", run_ids)
    monkeypatch.setattr(launch, "run", stub("launch.run"))
    monkeypatch.setattr(export, "export", stub("export.export"))
    monkeypatch.setattr(plot, "plot", stub("plot.plot"))
    monkeypatch.setattr(plot, "save", stub("plot.save"))
    monkeypatch.setattr(ticket, "export", stub("ticket.export"))
    monkeypatch.setattr(ticket, "build", stub("ticket.build"))
    return called


def files(folder: Path) -> set[Path]:
    """Everything under `folder`, hidden temporary files included."""
    return set(folder.rglob("*"))


def invoke(tmp_path: Path, command: str, out: Path | None, *extra: str):
    """`lt COMMAND` with `out` as its -o (none: no -o at all), a store in `tmp_path`."""
    args, _ = COMMANDS[command]
    if out is None:
        i = args.index("-o")
        args = args[:i] + args[i + 2 :]
    else:
        args = [str(out) if a == "OUT" else a for a in args]
    return CliRunner().invoke(cli, [*args, *extra, "--store", str(tmp_path / "store")])


def assert_refused(result, out: Path, reason: str, calls: list[str], before: set[Path], tmp_path):
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: -o {out}: ") and reason in last, result.stderr
    assert calls == []  # nothing loaded, trained or written
    assert files(tmp_path) == before


def bad_paths(tmp_path: Path, suffix: str) -> dict[str, tuple[Path, str]]:
    """Output paths each command must refuse, with a part of the message."""
    (tmp_path / "a-file").write_text("not a folder")
    return {
        "no suffix": (tmp_path / "out", "the suffix picks the"),
        "unknown suffix": (tmp_path / "out.txt", "(got '.txt')"),
        "missing folder": (tmp_path / "missing" / f"out{suffix}", "does not exist"),
        "folder is a file": (tmp_path / "a-file" / f"out{suffix}", "is not a folder"),
    }


@pytest.mark.parametrize(
    "case", ["no suffix", "unknown suffix", "missing folder", "folder is a file"]
)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_output_path_exits_2_before_anything_runs(tmp_path, calls, command, case):
    out, reason = bad_paths(tmp_path, COMMANDS[command][1])[case]
    before = files(tmp_path)
    result = invoke(tmp_path, command, out)
    assert_refused(result, out, reason, calls, before, tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_folder_exits_2(tmp_path, calls, command, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: make the folder read-only for lt too
        real = os.access
        monkeypatch.setattr(
            outputs.os, "access", lambda p, mode: Path(p) != folder and real(p, mode)
        )
    out = folder / f"out{COMMANDS[command][1]}"
    before = files(tmp_path)
    try:
        result = invoke(tmp_path, command, out)
    finally:
        folder.chmod(0o755)
    assert_refused(result, out, "is not writable", calls, before, tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_as_the_output_exits_2(tmp_path, calls, command):
    out = tmp_path / f"figure{COMMANDS[command][1]}"
    out.mkdir()
    before = files(tmp_path)
    result = invoke(tmp_path, command, out)
    assert result.exit_code == 2, result.output
    assert str(out) in result.stderr and "is a directory" in result.stderr  # Click's check
    assert calls == [] and files(tmp_path) == before


def test_reproduce_refuses_a_folder_at_its_default_path_before_training(
    tmp_path, calls, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    Path("reproduce-lenet.png").mkdir()
    before = files(tmp_path)
    result = invoke(tmp_path, "reproduce", None)
    out = Path("reproduce-lenet.png")
    assert_refused(result, out, "is a folder", calls, before, tmp_path)


def test_reproduce_lists_the_image_types_it_writes(tmp_path, calls):
    result = invoke(tmp_path, "reproduce", tmp_path / "out")
    assert result.exit_code == 2
    assert "use one of " in result.stderr and all(
        t in result.stderr for t in (".png", ".pdf", ".svg")
    )
    assert "(got none)" in result.stderr and calls == []


def test_export_refuses_a_suffix_its_flag_contradicts(tmp_path, calls):
    out = tmp_path / "rows.json"
    result = invoke(tmp_path, "export", out, "--csv")
    assert_refused(result, out, "--csv writes CSV; name a .csv file", calls, set(), tmp_path)


# -- good paths go through to the library ------------------------------------------------------


def test_plot_takes_any_image_type_vl_convert_writes(tmp_path, calls):
    result = invoke(tmp_path, "plot", tmp_path / "figure.PDF")
    assert result.exit_code == 1 and "stub plot.plot" in result.stderr
    assert calls == ["Store.resolve", "plot.plot"]


def test_reproduce_trains_with_a_good_default_path(tmp_path, calls, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(tmp_path, "reproduce", None)
    assert result.exit_code == 1 and "stub launch.run" in result.stderr
    assert calls == ["launch.run"]


def test_export_takes_its_format_from_the_suffix(tmp_path, calls, monkeypatch):
    formats = []

    def record(store, run_ids, fmt, curves):
        formats.append(fmt)
        return "[]\n"

    monkeypatch.setattr(export, "export", record)
    for name in ("rows.json", "rows.CSV"):
        assert invoke(tmp_path, "export", tmp_path / name).exit_code == 0
    assert formats == ["json", "csv"]
    assert (tmp_path / "rows.json").read_text() == "[]\n"
    assert invoke(tmp_path, "export", tmp_path / "both.json", "--json").exit_code == 0


def test_ticket_writes_to_an_existing_file_in_a_folder(tmp_path, calls):
    out = tmp_path / "t.safetensors"
    out.write_bytes(b"old")
    result = invoke(tmp_path, "ticket", out)
    assert result.exit_code == 1 and "stub ticket.export" in result.stderr
    assert calls == ["Store.resolve", "ticket.export"]
