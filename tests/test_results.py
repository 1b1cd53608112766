"""`lt compare`, `lt export`, `lt plot` and `lt show`'s control columns, on one small real
store: run "alpha" (1 round, 1 replicate, a reinit and a random control per level) and run
"beta" (another seed and prune rate, 2 rounds, 2 replicates, no controls)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ltcli.cli.main import cli
from ltcli.cli.options import LtGroup
from ltcli.cli.results_commands import compare, export, plot
from ltcli.results import plot as plotting
from ltcli.results import report
from ltcli.storage.store import Store

pytestmark = pytest.mark.integration

results = LtGroup(commands={"compare": compare, "export": export, "plot": plot})


@pytest.fixture(scope="module")
def store(tmp_path_factory, real_data) -> Path:
    folder = tmp_path_factory.mktemp("results")
    spec = folder / "tiny.toml"
    spec.write_text(
        f'[data]\ndataset = "{real_data[0]}"\nvalidation = 1000\n'
        '[model]\nname = "lenet300"\n'
        '[train]\niterations = "200it"\neval_every = "100it"\nbatch_size = 60\n'
        "[prune]\nrate = 0.5\n"
    )
    runs = {
        "alpha": ["--rounds", "1", "--replicates", "1", "--controls", "reinit:1,random:1"],
        "beta": ["--rounds", "2", "--replicates", "2", "--seed", "1", "--prune-rate", "0.8"],
    }
    for name, flags in runs.items():
        args = ["run", str(spec), "--name", name, *flags, "--data-dir", str(real_data[1])]
        result = CliRunner().invoke(cli, [*args, "--store", str(folder / "store")])
        assert result.exit_code == 0, result.output
    return folder / "store"


def lt(store: Path, *args: str):
    return CliRunner().invoke(results, [*args, "--store", str(store)])


def column(table: str, header: str) -> list[str]:
    """The cells under `header` in a `report.format_table` table (columns after the first are
    right-aligned, so a cell ends where its header ends and starts after the one before)."""
    head, *rows = table.splitlines()
    spans = [(m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", head)]
    i = [name for _, name in spans].index(header)
    start = spans[i - 1][0] if i else 0
    return [row[start : spans[i][0]].strip() for row in rows]


def cells(store: Path, name: str, **where) -> list[dict]:
    s = Store(store)
    run_id = s.resolve(name)
    found = [s.read_metrics(run_id, c) for c in s.finished_cells(run_id)]
    return [m for m in found if all(m[k] == v for k, v in where.items())]


def test_compare_a_run_with_itself_shows_zero_deltas(store):
    result = lt(store, "compare", "alpha", "alpha")
    assert result.exit_code == 0, result.output
    table = result.stdout
    runs = column(table, "run")
    assert runs == ["alpha"] * len(runs) and len(runs) == 2 * (1 + 3)  # level 0: ticket only
    for header, zero in (("Δ it", "+0"), ("Δ @ES", "+0.00"), ("Δ final", "+0.00")):
        deltas = column(table, header)
        assert deltas[0::2] == ["-"] * 4  # the first run is the reference
        assert deltas[1::2] == [zero] * 4
    assert column(table, "member") == ["ticket"] * 4 + ["reinit"] * 2 + ["random"] * 2
    assert column(table, "n") == ["1"] * 8  # one replicate, one control of each kind
    assert report.DIVERGED_NOTE not in table


def test_compare_aligns_levels_and_deltas_are_against_the_first_run(store):
    table = lt(store, "compare", "alpha", "beta").stdout
    data = json.loads(lt(store, "compare", "alpha", "beta", "--json").stdout)
    assert [r["label"] for r in data["runs"]] == ["alpha", "beta"]
    assert [level["level"] for level in data["levels"]] == [0, 1, 2]
    level1_alpha, level1_beta = data["levels"][1]["runs"]
    beta_remaining = cells(store, "beta", level=1)[0]["percent_remaining"]
    assert level1_beta["percent_remaining"] == pytest.approx(beta_remaining)
    assert level1_alpha["percent_remaining"] != pytest.approx(beta_remaining)
    assert data["levels"][2]["runs"][0] is None  # alpha has no level 2
    alpha_acc = cells(store, "alpha", level=1, member="ticket")[0]["early_stop_test_acc"]
    beta_acc = [m["early_stop_test_acc"] for m in cells(store, "beta", level=1)]
    assert len(beta_acc) == 2  # replicates
    ticket = level1_beta["members"]["ticket"]["early_stop_test_acc"]
    assert ticket["mean"] == pytest.approx(np.mean(beta_acc))
    assert ticket["std"] == pytest.approx(np.std(beta_acc, ddof=1)) and ticket["n"] == 2
    assert ticket["diverged"] == 0
    assert ticket["delta"] == pytest.approx(np.mean(beta_acc) - alpha_acc)
    assert "reinit" in level1_alpha["members"] and "reinit" not in level1_beta["members"]
    # The table shows the same numbers, per level, member and run.
    keys = [column(table, h) for h in ("level", "run", "member")]
    rows = list(zip(*keys, strict=True))
    at = rows.index(("1", "beta", "ticket"))
    assert column(table, "remaining %")[at] == f"{beta_remaining:.1f}"
    assert column(table, "n")[at] == "2"
    assert column(table, "test acc @ES %")[at] == report.format_stat(report.Stat.of(beta_acc), 100)
    assert column(table, "Δ @ES")[at] == f"{100 * ticket['delta']:+.2f}"
    assert column(table, "Δ @ES")[rows.index(("1", "beta", "reinit"))] == "-"
    assert column(table, "remaining %")[rows.index(("2", "alpha", "ticket"))] == "-"


def test_export_has_one_typed_row_per_finished_cell(store):
    result = lt(store, "export")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    s = Store(store)
    finished = sum(len(list(s.finished_cells(r))) for r in s.run_ids())
    assert len(frame) == finished == 1 + 3 + 2 * 3  # alpha: 1 + 3 cells; beta: 2 x 3 cells
    assert sorted(frame["name"].unique()) == ["alpha", "beta"]
    for name in ("replicate", "level", "early_stop_iter", "iterations"):
        assert frame[name].dtype == np.int64, name
    floats = ["percent_remaining", "remaining_fc1", "remaining_fc2", "remaining_out"]
    floats += ["early_stop_test_acc", "early_stop_test_loss", "final_test_acc", "min_val_loss"]
    for name in [*floats, "wall_seconds"]:
        assert frame[name].dtype == np.float64, name
    for name in ("run_id", "name", "experiment", "dataset", "model", "member", "grouping"):
        assert pd.api.types.is_string_dtype(frame[name]), name
    assert frame["diverged"].dtype == frame["deterministic"].dtype == bool
    assert not frame["diverged"].any()
    assert set(frame["grouping"]) <= {"single", "vmap", "serial", "host"}
    row = frame[(frame["name"] == "alpha") & (frame["member"] == "random-0")].iloc[0]
    stored = cells(store, "alpha", level=1, member="random-0")
    assert row["early_stop_test_acc"] == stored[0]["early_stop_test_acc"]  # every digit kept
    assert row["remaining_fc1"] == 50.0 and row["remaining_out"] == 75.0
    assert row["run_id"] == Store(store).resolve("alpha")


def test_export_json_and_a_file_hold_the_same_rows(store, tmp_path):
    as_json = json.loads(lt(store, "export", "beta", "--json").stdout)
    target = tmp_path / "beta.csv"
    written = lt(store, "export", "beta", "--csv", "-o", str(target))
    assert written.exit_code == 0 and written.stdout == ""
    frame = pd.read_csv(target)
    assert len(as_json) == len(frame) == 6
    assert list(as_json[0]) == list(frame.columns)
    assert [r["early_stop_test_acc"] for r in as_json] == list(frame["early_stop_test_acc"])


def test_export_curves_has_one_row_per_evaluation(store):
    frame = pd.read_csv(io.StringIO(lt(store, "export", "alpha", "--curves").stdout))
    assert list(frame.columns) == [
        "run_id",
        "replicate",
        "level",
        "member",
        "percent_remaining",
        "iteration",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
    ]
    alpha = cells(store, "alpha")
    assert len(frame) == sum(len(m["curve"]["iteration"]) for m in alpha) == 4 * 2
    assert frame["iteration"].dtype == np.int64 and frame["test_acc"].dtype == np.float64
    reinit = frame[frame["member"] == "reinit-0"]
    stored = cells(store, "alpha", member="reinit-0")[0]["curve"]
    assert list(reinit["iteration"]) == stored["iteration"] == [100, 200]
    assert list(reinit["test_acc"]) == stored["test_acc"]


def test_export_takes_one_format(store):
    result = lt(store, "export", "--csv", "--json")
    assert result.exit_code == 2 and "--csv and --json" in result.stderr


def test_plot_writes_a_png_of_the_requested_size(store, tmp_path):
    path = tmp_path / "alpha.png"
    result = lt(store, "plot", "alpha", "-o", str(path), "--size", "640x360")
    assert result.exit_code == 0, result.output
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (640, 360)
    pixels = np.asarray(image.convert("RGB"))
    assert (pixels.min(axis=2) < 200).mean() > 0.01  # lines and text were drawn
    several = tmp_path / "both.png"
    args = ["plot", "alpha", "beta", "-o", str(several), "--levels", "0,2", "--size", "900x300"]
    assert lt(store, *args, "--dpi", "150").exit_code == 0
    assert Image.open(several).size == (900, 300)


def test_the_figure_draws_the_papers_panels(store):
    s = Store(store)
    fig = plotting.figure(s, [s.resolve("alpha"), s.resolve("beta")], (1500, 500), 100, [0, 2])
    curves, iterations, accuracy = fig.panels
    # Default levels: every level, up to 5.
    alone = plotting.figure(s, [s.resolve("alpha")], (1500, 500), 100).panels[0]
    assert [line.label for line in alone.series] == ["100.0%", "50.1%"]
    assert [line.label for line in curves.series] == [
        "alpha 100.0%",
        "beta 100.0%",
        f"beta {cells(store, 'beta', level=2)[0]['percent_remaining']:.1f}%",
    ]
    for panel in (iterations, accuracy):
        assert panel.x_scale == "log"
        left, right = panel.x_domain
        assert left > 100 > right  # reversed: dense on the left
    bars = {bar.label: bar for bar in accuracy.series if bar.lo is not None}
    assert list(bars) == ["alpha ticket", "alpha random", "alpha reinit", "beta ticket"]
    assert bars["alpha ticket"].linestyle == bars["beta ticket"].linestyle == "-"
    assert bars["alpha reinit"].linestyle == bars["alpha random"].linestyle == "--"
    assert bars["alpha ticket"].color != bars["beta ticket"].color
    beta = [[m["early_stop_test_acc"] for m in cells(store, "beta", level=lv)] for lv in (0, 1, 2)]
    assert np.allclose(bars["beta ticket"].y, 100 * np.mean(beta, axis=1))
    remaining = [cells(store, "beta", level=lv)[0]["percent_remaining"] for lv in (0, 1, 2)]
    assert np.allclose(bars["beta ticket"].x, remaining)


@pytest.mark.parametrize("bad", [["--levels", "5"], ["--levels", "a,b"], ["--size", "12x"]])
def test_plot_rejects_bad_levels_and_sizes(store, tmp_path, bad):
    path = tmp_path / "x.png"
    result = lt(store, "plot", "alpha", "-o", str(path), *bad)
    assert result.exit_code == 2 and bad[0] in result.stderr
    assert not path.exists()


COMMANDS = [["compare", "alpha"], ["export"], ["plot", "-o", "never.png"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_unknown_run_exits_2(store, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = lt(store, *command, "zzzz")
    assert result.exit_code == 2 and "run 'zzzz': no such run" in result.stderr
    assert not (tmp_path / "never.png").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_ambiguous_prefix_names_the_candidates(store, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = Store(store).run_ids()
    common = next(n for n in range(12, -1, -1) if ids[0][:n] == ids[1][:n])
    result = lt(store, *command, ids[0][:common])
    assert result.exit_code == 2 and "ambiguous" in result.stderr
    assert ids[0][:12] in result.stderr and ids[1][:12] in result.stderr


def test_show_has_the_controls_early_stop_columns(store):
    result = CliRunner().invoke(cli, ["show", "alpha", "--store", str(store)])
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("\nlevel") + 1 :]
    for kind in ("reinit", "random"):
        (control,) = cells(store, "alpha", level=1, member=f"{kind}-0")
        assert column(table, f"{kind} early-stop it") == ["-", str(control["early_stop_iter"])]
        acc = f"{100 * control['early_stop_test_acc']:.2f}"
        assert column(table, f"{kind} acc @ES %") == ["-", acc]
        assert column(table, f"{kind} n") == ["-", "1"]
    assert column(table, "n") == ["1", "1"]


@pytest.mark.unit
def test_the_levels_table_gives_each_control_kind_its_own_early_stop():
    def cell(member: str, replicate: int, stop: int, acc: float) -> dict:
        return {
            "level": 1,
            "member": member,
            "replicate": replicate,
            "percent_remaining": 51.3,
            "early_stop_iter": stop,
            "early_stop_test_acc": acc,
            "final_test_acc": acc,
        }

    summary = report.level_summary(
        [
            cell("ticket", 0, 300, 0.98),
            cell("ticket", 1, 500, 0.96),
            cell("reinit-0", 0, 100, 0.90),
            cell("reinit-0", 1, 200, 0.92),
            cell("random-0", 0, 400, 0.80),
            cell("random-0", 1, 400, 0.82),
        ]
    )
    table = report.levels_table(summary)
    # Sample standard deviations (ddof=1), as pandas' .std() gives on the export.
    assert column(table, "early-stop it") == ["400 ± 141"]
    assert column(table, "reinit early-stop it") == ["150 ± 71"]
    assert column(table, "reinit acc @ES %") == ["91.00 ± 1.41"]
    assert column(table, "random early-stop it") == ["400 ± 0"]
    assert column(table, "random acc @ES %") == ["81.00 ± 1.41"]
    assert column(table, "n") == column(table, "reinit n") == ["2"]


def test_export_and_compare_show_each_cells_flops(store):
    """LeNet-300-100's multiply-adds by hand (2 FLOPs each); a cell trains under its mask,
    so its training FLOPs (x dense) are its inference FLOPs, and in all 3 forwards a step."""
    macs = {"fc1": 784 * 300, "fc2": 300 * 100, "out": 100 * 10}
    dense = 2.0 * sum(macs.values())
    frame = pd.read_csv(io.StringIO(lt(store, "export").stdout))
    for _, row in frame.iterrows():
        sparse = sum(2.0 * m * row[f"remaining_{layer}"] / 100 for layer, m in macs.items())
        assert row["inference_flops"] == pytest.approx(sparse / dense)
        assert row["training_flops"] == pytest.approx(sparse / dense)
        assert row["training_flops_total"] == pytest.approx(3 * sparse * 60 * 200)
    assert (frame[frame["level"] == 0]["training_flops"] == 1.0).all()
    assert (frame[frame["level"] > 0]["inference_flops"] < 0.6).all()
    table = lt(store, "compare", "alpha", "beta").stdout
    keys = list(zip(*(column(table, h) for h in ("level", "run", "member")), strict=True))
    beta = frame[(frame["name"] == "beta") & (frame["level"] == 1)]
    at = keys.index(("1", "beta", "ticket"))
    mean = report.Stat.of(list(beta["training_flops"]))
    assert column(table, "train FLOPs x")[at] == report.format_stat(mean, 1, 3)
    assert column(table, "infer FLOPs x")[keys.index(("0", "alpha", "ticket"))] == "1.000"
    data = json.loads(lt(store, "compare", "alpha", "beta", "--json").stdout)
    ticket = data["levels"][1]["runs"][1]["members"]["ticket"]
    assert ticket["training_flops"]["mean"] == pytest.approx(beta["training_flops"].mean())
