"""mkdocs hooks: the Combinations page's table, generated from `ltcli.experiment.combinations`;
the Experiments page's field reference, generated from `ltcli.experiment.fields.FIELDS`; the
command-line reference as `lt COMMAND --help` prints it, checked complete.

Every combination of pruning method x retraining mode x pruning schedule x member is put to
the code (`refusal`, `member_refusal`, `inputs`, at rewind point 0 and at k), and its answer
becomes a row; rows whose answers agree and that differ in one key column only are merged
(``snip, grasp`` -> one row), and a member whose answer is the same for every accepted
combination gets one row, ``any accepted``. So the page restates the code row for row and
cannot drift from it; `tests/test_docs.py` checks that every combination is in exactly one
row, with the code's answer.

The command-line reference (docs/cli.md) is mkdocs-click's. Its descriptions keep Click's
``\\b`` paragraphs verbatim (as ``--help`` does) instead of running them into one line, and
after the build every command and every flag of the Click tree must be on the page, or the
build fails.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Iterable, Iterator

import click

from ltcli.experiment import combinations
from ltcli.experiment.fields import FIELDS, RETRAIN_MODES
from ltcli.experiment.member import SPAWN, Member
from ltcli.science.methods import AT_INIT_METHODS, PRUNING_METHODS

MARKER = "<!-- lt:combination-table -->"
FIELD_MARKER = "<!-- lt:field-table -->"
"""The line of docs/combinations.md that the table replaces."""

RETRAINS = RETRAIN_MODES
AT_INIT = AT_INIT_METHODS
MEMBERS = ("ticket", "stability", "reinit", "random", "shuffle", "invert", "rewind")
MEMBERS += ("sign", "signed_reinit")
"""Members of a pruned level, as the table names their kinds."""
LEVEL0 = ("level 0 ticket", "level 0 spawn-k")
KEYS = ("method", "retrain", "schedule", "member")
DOMAINS = {
    "method": PRUNING_METHODS,
    "retrain": RETRAINS,
    "schedule": combinations.SCHEDULES,
    "member": LEVEL0 + MEMBERS,
}
HEADER = (
    "method",
    "retrain",
    "schedule",
    "member",
    "weights start from",
    "mask",
    "schedule step",
    "data (order, position)",
)

K, T = 101, 1000
"""Sentinel rewind point and training length: the code's numbers are read back as k and T."""

WEIGHTS = {
    "theta0": "θ0",
    "theta_k": "θk",
    "fresh": "a fresh initialization",
    "trained_previous": "level L-1's trained ticket",
    "trained_dense": "level 0's trained ticket (the network its mask was pruned from)",
    "ticket_at_k": "the dense ticket's whole state at k (bit for bit, optimizer state included)",
    "signed_constant": "θ_r's signs times each layer's std in θ_r (Zhou et al. 2019)",
    "fresh_signed": "a fresh initialization's magnitudes with θ_r's signs (Zhou et al. 2019)",
}
MASKS = {
    "dense": "dense",
    "imp": "magnitude (or prune.criterion) of level L-1's trained ticket",
    "one_shot": "magnitude (or prune.criterion) of level 0's trained ticket, to target L",
    "scores": "the method's scores of θ_r",
    "ticket": "the ticket's",
    "random": "random, the ticket's per-layer counts",
    "inverted": "the method's lowest scores of θ_r, the ticket's total",
    "gmp": "dense, pruned by magnitude to target L while it trains",
    "budget": "random at the layer budget of target L, fixed",
    "drop_grow": "random at the layer budget of target L, dropped and regrown while it trains",
    "final": "the mask the ticket ended with",
    "learned": "learned while it trains (dense at the start): top-|w|, top scores or drawn",
}
ORDERS = {"replicate": "replicate's", "own": "its own", "own_after_k": "its own after k"}
NUMBERS = {0: "0", K: "k", T: "T"}
MEMBER_NAMES = {"stability": "stability-i", "reinit": "reinit-i", "random": "random-i"}
MEMBER_NAMES |= {"shuffle": "shuffle-i", "invert": "invert-i", "level 0 spawn-k": "level 0 spawn-k"}
MEMBER_NAMES |= {"rewind": "rewind-i", "sign": "sign-i", "signed_reinit": "signed_reinit-i"}

Key = tuple[frozenset[str], ...]
Row = tuple[Key, tuple[str, ...]]


def _number(pair: tuple[int, int]) -> str:
    """A schedule step or data position at rewind point 0 and at k, as the table writes it."""
    if pair[0] == pair[1]:
        return NUMBERS[pair[0]]
    if pair == (0, K):
        return "k"
    raise ValueError(f"no notation for {pair} (rewind point 0, k)")


def _weights(pair: tuple[str, str]) -> str:
    if pair == ("theta0", "theta_k"):
        return "θ_r"
    if pair[0] != pair[1]:
        raise ValueError(f"no notation for weights {pair} (rewind point 0, k)")
    return WEIGHTS[pair[0]]


def _member(name: str) -> tuple[Member, int]:
    if name == "level 0 ticket":
        return Member(), 0
    if name == "level 0 spawn-k":
        return Member(SPAWN, K), 0
    return Member(name, 0 if name == "ticket" else 1), 1


def answer(method: str, retrain: str, schedule: str, member: str) -> tuple[str, ...]:
    """The code's answer for one combination, as the table's output cells: a refusal (the
    message spec check prints, the method's name written METHOD) or the cell's inputs."""
    refused = combinations.refusal(method, retrain, schedule)
    cell, level = _member(member)
    if not refused and level:
        refused = combinations.member_refusal(method, cell.kind)
    if refused:
        return (f"refused (exit 2): {refused.replace(f' {method} ', ' METHOD ')}", "", "", "")
    got = [
        combinations.inputs(
            method=method,
            retrain=retrain,
            rewind=rewind,
            iterations=T,
            schedule=schedule,
            member=cell,
            level=level,
        )
        for rewind in (0, K)
    ]
    if got[0].mask != got[1].mask or got[0].data_order != got[1].data_order:
        raise ValueError(f"no notation for {got} (rewind point 0, k)")
    return (
        _weights((got[0].weights, got[1].weights)),
        MASKS[got[0].mask],
        _number((got[0].schedule_step, got[1].schedule_step)),
        f"{ORDERS[got[0].data_order]}, {_number((got[0].data_position, got[1].data_position))}",
    )


def entries() -> Iterable[tuple[str, str, str, str]]:
    """Every combination the table covers: method x retraining x schedule x member."""
    return itertools.product(PRUNING_METHODS, RETRAINS, combinations.SCHEDULES, DOMAINS["member"])


def _accepted(method: str, retrain: str, schedule: str) -> bool:
    return combinations.refusal(method, retrain, schedule) is None


def _merge(rows: list[Row], column: int) -> list[Row]:
    """Rows that differ only in `column` and agree in every answer, as one row."""
    merged: dict[tuple, set[str]] = {}
    for key, out in rows:
        rest = key[:column] + key[column + 1 :]
        merged.setdefault((rest, out), set()).update(key[column])
    return [
        ((*rest[:column], frozenset(values), *rest[column:]), out)
        for (rest, out), values in merged.items()
    ]


def rows() -> list[Row]:
    """The table: (key sets per column, answer) rows, every combination in exactly one."""
    answers = {entry: answer(*entry) for entry in entries()}
    table: list[Row] = []
    refused_runs = {e: a for e, a in answers.items() if not _accepted(*e[:3])}
    accepted = {e: a for e, a in answers.items() if _accepted(*e[:3])}
    for member in DOMAINS["member"]:
        mine = {e: a for e, a in accepted.items() if e[3] == member}
        if len(set(mine.values())) == 1:  # the same for every accepted combination
            table.append((("*", "*", "*", frozenset({member})), next(iter(mine.values()))))
            continue
        table += [(tuple(frozenset({v}) for v in e), a) for e, a in mine.items()]
    # A refused run is refused whatever its members.
    table += [(tuple(frozenset({v}) for v in e), a) for e, a in refused_runs.items()]
    before = None
    while before != len(table):
        before = len(table)
        for column in (0, 2, 1, 3):
            plain = [r for r in table if "*" not in r[0]]
            table = [r for r in table if "*" in r[0]] + _merge(plain, column)
    order = {m: i for i, m in enumerate(DOMAINS["member"])}
    return sorted(
        table,
        key=lambda r: (
            r[1][0].startswith("refused") and len(r[0][3]) > 1,
            min(order[m] for m in r[0][3]),
            r[0][0] != "*" and min(PRUNING_METHODS.index(m) for m in r[0][0]),
            r[0][1] != "*" and min(RETRAINS.index(m) for m in r[0][1]),
            r[0][2] != "*" and min(combinations.SCHEDULES.index(m) for m in r[0][2]),
        ),
    )


def covers(row: Row, entry: tuple[str, str, str, str]) -> bool:
    """Whether `row` is the table's row for `entry` (``any accepted`` rows: when its method,
    retraining and schedule are accepted)."""
    key, _ = row
    if key[0] == "*":
        return entry[3] in key[3] and _accepted(*entry[:3])
    return all(value in values for value, values in zip(entry, key, strict=True))


def _cell(column: str, values: frozenset[str] | str) -> str:
    if values == "*":
        return "any accepted"
    if set(values) == set(DOMAINS[column]):
        return "any"
    if column == "method" and set(values) == set(AT_INIT):
        return "at-init"
    if column == "member" and set(values) == set(MEMBERS) | set(LEVEL0):
        return "any"
    ordered = sorted(values, key=DOMAINS[column].index)
    if column == "member":
        ordered = [f"`{MEMBER_NAMES.get(m, m)}`" for m in ordered]
    return ", ".join(ordered)


def markdown() -> str:
    """The table in Markdown, with a line naming the at-init methods."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for key, out in rows():
        cells = [_cell(c, v) for c, v in zip(KEYS, key, strict=True)]
        lines.append("| " + " | ".join([*cells, *out]) + " |")
    lines += [
        "",
        f"at-init: the methods that prune at initialization ({', '.join(AT_INIT)}). "
        "`any accepted`: every method, retraining mode and schedule that is not refused. "
        "Generated from `ltcli/experiment/combinations.py` when the site is built.",
    ]
    return "\n".join(lines)


def _default(value: object) -> str:
    """A field's default as the table shows it: TOML-like, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def field_markdown() -> str:
    """Every spec field (`FIELDS`, the one place each is defined): its default, what it
    takes, and what it means (the text its ``lt run`` flag's help shows too)."""
    lines = ["| field | default | takes | meaning |", "|---|---|---|---|"]
    for key, field in FIELDS.items():
        cells = [f"`{key}`", _default(field.default), field.allowed, " ".join(field.doc.split())]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Generated from `ltcli/experiment/fields.py` when the site is built."]
    return "\n".join(lines)


def on_page_markdown(text: str, **_: object) -> str:
    """mkdocs hook: fills each generated table in where the page has its marker."""
    if MARKER in text:
        text = text.replace(MARKER, markdown())
    return text.replace(FIELD_MARKER, field_markdown()) if FIELD_MARKER in text else text


def _fail(message: str) -> None:
    from mkdocs.exceptions import PluginError  # here: the tests load this file without mkdocs

    raise PluginError(message)


def verbatim_paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """A Click help text's lines as Markdown: a paragraph after a ``\\b`` line (Click prints it
    as written) becomes a text block; elsewhere ``<`` is escaped, so ``<run>`` shows."""
    verbatim = False
    for line in lines:
        if line.strip() == "\b":
            verbatim = True
            yield "```text"
        elif verbatim and not line.strip():
            verbatim = False
            yield "```"
            yield ""
        else:
            yield line if verbatim else line.replace("<", "&lt;")
    if verbatim:
        yield "```"


def _keep_click_paragraphs() -> None:
    try:
        from mkdocs_click import _docs
    except ImportError:  # mkdocs-click missing: mkdocs says so when it loads the extension
        return
    original = getattr(_docs, "_make_description", None)
    if original is None or getattr(original, "lt_patched", False):
        if original is None:
            _fail("docs/hooks.py: mkdocs-click changed: it has no _docs._make_description")
        return

    def description(ctx: click.Context, remove_ascii_art: bool = False) -> Iterator[str]:
        return verbatim_paragraphs(original(ctx, remove_ascii_art))

    description.lt_patched = True
    _docs._make_description = description


_keep_click_paragraphs()


def cli_words() -> list[str]:
    """What the reference must show: ``lt COMMAND`` for every command, and every flag."""
    from ltcli.cli.main import cli

    words = []

    def walk(command: click.Command, path: list[str]) -> None:
        if path:
            words.append(" ".join(["lt", *path]))
        for param in command.params:
            if isinstance(param, click.Option):
                words.extend(param.opts + param.secondary_opts)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(cli, [])
    return words


def on_post_page(output: str, *, page, **_: object) -> str:
    """mkdocs hook: the command-line reference must name every command and flag."""
    if page.file.src_uri == "cli.md":
        text = html.unescape(output)
        missing = [word for word in cli_words() if word not in text]
        if missing:
            _fail(f"cli.md: the reference lacks {', '.join(missing)}")
    return output
