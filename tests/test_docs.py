"""The documentation: the Combinations page's table is the code's, row for row, and every
command the README shows parses (`lt` commands through lt's own Click tree, `make` targets in
the Makefile). Fast: nothing trains, no mkdocs needed (`make docs` builds the site)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

from ltcli.cli.main import cli
from ltcli.experiment import combinations
from ltcli.experiment.fields import FIELDS, RETRAIN_MODES
from ltcli.experiment.member import CONTROL_KINDS, Member
from ltcli.science.methods import PRUNING_METHODS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    loaded = importlib.util.spec_from_file_location("lt_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


hooks = _hooks()


def test_the_table_covers_what_the_code_knows():
    assert set(hooks.DOMAINS["method"]) == set(PRUNING_METHODS)
    assert set(hooks.DOMAINS["retrain"]) == set(RETRAIN_MODES)
    assert set(hooks.DOMAINS["schedule"]) == set(combinations.SCHEDULES)
    assert set(hooks.MEMBERS) == {"ticket", *CONTROL_KINDS}


def _inputs_as_written(method, retrain, schedule, member):
    """The code's inputs for an accepted combination, at rewind point 0 and at k, in the
    table's words (computed here apart from the hook's `answer`)."""
    level0, kind = member.startswith("level 0"), member.split()[-1].removesuffix("-k")
    cell = Member(kind, hooks.K if kind == "spawn" else 0)
    got = [
        combinations.inputs(
            method=method,
            retrain=retrain,
            rewind=rewind,
            iterations=hooks.T,
            schedule=schedule,
            member=cell,
            level=0 if level0 else 2,
        )
        for rewind in (0, hooks.K)
    ]
    weights = {got[0].weights, got[1].weights}
    numbers = {(0, 0): "0", (hooks.K, hooks.K): "k", (0, hooks.K): "k", (hooks.T, hooks.T): "T"}
    return (
        "θ_r" if weights == {"theta0", "theta_k"} else hooks.WEIGHTS[got[0].weights],
        hooks.MASKS[got[1].mask],
        numbers[(got[0].schedule_step, got[1].schedule_step)],
        f"{hooks.ORDERS[got[1].data_order]}, "
        + numbers[(got[0].data_position, got[1].data_position)],
    )


def test_every_combination_is_in_exactly_one_row_with_the_codes_answer():
    rows = hooks.rows()
    entries = list(hooks.entries())
    assert len(entries) == len(PRUNING_METHODS) * 3 * 3 * (len(CONTROL_KINDS) + 3)
    used = set()
    for entry in entries:
        method, retrain, schedule, member = entry
        matches = [i for i, row in enumerate(rows) if hooks.covers(row, entry)]
        assert len(matches) == 1, (entry, matches)
        used.add(matches[0])
        out = rows[matches[0]][1]
        assert out == hooks.answer(*entry), entry
        if not out[0].startswith("refused"):
            assert out == _inputs_as_written(*entry), entry
        kind = member.split()[-1].removesuffix("-k")
        refused = combinations.refusal(method, retrain, schedule) or (
            not member.startswith("level 0") and combinations.member_refusal(method, kind)
        )
        assert out[0].startswith("refused") == bool(refused), entry
        if refused:
            assert out[0].replace("METHOD", method).endswith(refused), entry
    assert used == set(range(len(rows)))  # no row stands for nothing


def test_the_markdown_has_one_line_per_row_and_the_page_has_its_marker():
    table = [line for line in hooks.markdown().splitlines() if line.startswith("|")]
    assert len(table) == len(hooks.rows()) + 2  # header and rule
    assert all(line.count(" | ") == len(hooks.HEADER) - 1 for line in table[2:])
    page = (ROOT / "docs" / "combinations.md").read_text()
    assert hooks.MARKER in page
    assert "| method |" not in page  # no hand-written copy beside it
    assert hooks.MARKER not in hooks.on_page_markdown(page)


def _readme_commands() -> list[str]:
    """Every shell line of the README's code blocks and every `lt ...` in its text."""
    text = (ROOT / "README.md").read_text()
    commands = [
        line.strip() for line in text.splitlines() if line.startswith("    ") and line.strip()
    ]
    commands += [" ".join(m.split()) for m in re.findall(r"`(lt [^`]+)`", text)]
    return commands


def _parse(argv: list[str]) -> click.Command:
    """Parses `lt ARGV` as the CLI would, down to the command, without invoking it."""
    command: click.Command = cli
    ctx = cli.make_context("lt", argv)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        assert command is not None, argv
        ctx = command.make_context(name, rest, parent=ctx)
    return command


def test_the_readme_shows_lt_and_make_commands():
    commands = _readme_commands()
    assert sum(c.startswith("lt ") for c in commands) >= 10
    assert "make install" in " ".join(commands) and "make demo" in " ".join(commands)
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


@pytest.mark.parametrize("line", _readme_commands())
def test_every_readme_command_parses(line: str):
    argv = shlex.split(line, comments=True)
    if argv[0] == "lt":
        _parse(argv[1:])
    elif argv[0] == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in argv[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    else:
        assert line == ". .venv/bin/activate", f"a README command the test does not know: {line}"


def test_a_bad_flag_does_not_parse():
    with pytest.raises(click.UsageError):
        _parse(["run", "smoke", "--roundz", "3"])
    with pytest.raises(click.UsageError):
        _parse(["nosuchcommand"])


def test_the_cli_reference_check_names_a_missing_flag():
    pytest.importorskip("mkdocs")
    words = hooks.cli_words()
    assert "lt data fetch" in words and "--one-shot" in words and "--controls-at" in words
    page = type("Page", (), {"file": type("File", (), {"src_uri": "cli.md"})()})()
    full = " ".join(words)
    assert hooks.on_post_page(full, page=page) == full
    with pytest.raises(Exception, match="lacks --controls-at"):
        hooks.on_post_page(full.replace("--controls-at", ""), page=page)


def test_click_verbatim_paragraphs_become_text_blocks():
    lines = ["Intro <run>.", "", "\b", "  lt show <run>", "  lt ls", "", "After."]
    assert list(hooks.verbatim_paragraphs(lines)) == [
        "Intro &lt;run>.",
        "",
        "```text",
        "  lt show <run>",
        "  lt ls",
        "```",
        "",
        "After.",
    ]


def test_the_field_reference_has_one_row_per_field_with_its_default_and_doc():
    text = hooks.field_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0].strip("| `") for row in rows] == list(FIELDS)
    for row, (key, field) in zip(rows, FIELDS.items(), strict=True):
        assert " ".join(field.doc.split()).replace("|", "\\|") in row, key
        assert hooks._default(field.default) in row, key
