"""``lt reproduce sparse-lenet``: sparse training against lottery tickets, one run per
method, each claim's verdict recomputed from the stored cells."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ltcli.cli.main import cli
from ltcli.results import report
from ltcli.results.reproduce import evci2020
from ltcli.results.reproduce.verdicts import HELD, NOT_HELD, NOT_REACHED
from ltcli.storage.store import Store

pytestmark = pytest.mark.integration

TINY = ("train.iterations=100it", "run.replicates=1", "run.rounds=1", "data.validation=500")


@pytest.mark.unit
def test_imp_reaches_both_targets_at_its_rate():
    remaining = [100 * (1 - evci2020.IMP_RATE) ** r for r in range(18)]
    assert remaining[10] == pytest.approx(10.0)
    assert remaining[17] == pytest.approx(2.0, rel=0.003)
    assert evci2020.ARMS[-1].overrides["run.rounds"] == 17


def _accuracy(cells: list[dict], target: float) -> float | None:
    """Mean final test accuracy of the tickets whose level keeps `target` percent, in
    float64; None if there are none."""
    found = [
        c["final_test_acc"]
        for c in cells
        if c["member"] == "ticket" and abs(c["percent_remaining"] - target) <= 0.1 * target
    ]
    return float(np.mean(np.asarray(found, np.float64))) if found else None


def test_each_claims_verdict_is_the_stored_accuracies_difference(tmp_path, real_data, monkeypatch):
    """Three of the arms (each arm a run: the cost of this test), and claims over them that
    hold or not, one with `or_equal`, one that IMP's single round cannot reach."""
    arms = {arm.name: arm for arm in evci2020.ARMS}
    monkeypatch.setattr(evci2020, "ARMS", (arms["static"], arms["set"], arms["imp"]))
    claims = (
        evci2020.Claim("set", "static", "SET above static", "test"),
        evci2020.Claim("static", "set", "static above SET", "test", True),
        evci2020.Claim("set", "imp", "SET at least IMP", "test", True),
    )
    monkeypatch.setattr(evci2020, "CLAIMS", claims)
    store = Store(tmp_path / "store")
    settings = (*TINY, f"data.dataset={real_data[0]}")  # the real data set at hand
    checked = evci2020.run("sparse-lenet", "small", store, settings=settings, data_dir=real_data[1])
    cells = {arm: report.cell_metrics(store, run) for arm, run in checked.runs.items()}
    for arm in ("static", "set"):
        kept = sorted(c["percent_remaining"] for c in cells[arm] if c["level"] > 0)
        assert kept == pytest.approx([2.0, 10.0], abs=0.01), arm
    assert len(checked.checks) == len(claims) * len(evci2020.TARGETS)
    for check in checked.checks:
        better = _accuracy(cells[check.claim.better], check.target)
        worse = _accuracy(cells[check.claim.worse], check.target)
        if check.claim.worse == "imp":  # one IMP round keeps 79%: neither target reached
            assert worse is None and check.verdict == NOT_REACHED
            continue
        gap = better - worse
        assert check.difference == pytest.approx(100 * gap, abs=1e-9)
        held = gap >= 0 if check.claim.or_equal else gap > 0
        assert check.verdict == (HELD if held else NOT_HELD)
        assert f"{100 * gap:+.2f} pts" in checked.text
    assert {c.verdict for c in checked.checks[:4]} == {HELD, NOT_HELD}  # opposite claims
    static = next(c for c in cells["static"] if c["level"] == 1)
    assert static["training_flops"] == pytest.approx(0.1, abs=1e-3)
    assert "0.100x" in checked.text


@pytest.mark.unit
def test_a_sparse_check_draws_no_figure(tmp_path):
    args = ["reproduce", "sparse-lenet", "-o", str(tmp_path / "x.png")]
    result = CliRunner().invoke(cli, [*args, "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "draws no figure" in result.output
    assert not (tmp_path / "s").exists()
