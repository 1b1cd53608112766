"""The `lt` command line: a thin Click layer. Each command parses its input, calls one
library function, and prints; results go to stdout, progress and notes to stderr.

Exit codes: 0 success, 1 a failure (`LtError`), 2 bad input (`UsageError`, bad flags).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from ltcli import models
from ltcli.cli import report_command as reporting
from ltcli.cli.data_commands import data
from ltcli.cli.options import DATA_DIR_OPTION, STORE_OPTION, FiniteFloatRange, LtGroup
from ltcli.cli.progress import CliProgress
from ltcli.cli.report_command import report as report_command
from ltcli.cli.reproduce_command import reproduce
from ltcli.cli.results_commands import compare, complete_runs, diff, export, plot
from ltcli.cli.store_commands import gc, rm
from ltcli.cli.ticket_command import ticket
from ltcli.core import hosts
from ltcli.core.paths import default_store
from ltcli.experiment import spec, sweep
from ltcli.experiment.fields import FIELDS, UNHASHED_SECTIONS
from ltcli.results import listing, report, session
from ltcli.storage.store import Store
from ltcli.train import executor_slurm


@click.group(cls=LtGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lt")
def cli() -> None:
    """lt: lottery-ticket experiments (iterative magnitude pruning) on JAX.

    \b
      lt run mnist-lenet --rounds 20 --replicates 5
      lt ls
      lt show <run>
      lt diff <run> <run>
    Runs are cached in a store: rerunning trains only what is missing.
    """


FIELD_FLAGS: dict[str, str] = {
    "--rounds": "run.rounds",
    "--replicates": "run.replicates",
    "--prune-rate": "prune.rate",
    "--iterations": "train.iterations",
    "--batch-size": "train.batch_size",
    "--lr": "train.lr",
    "--seed": "train.seed",
    "--eval-every": "train.eval_every",
    "--rewind-iter": "prune.rewind_iter",
    "--one-shot": "prune.one_shot",
    "--method": "prune.method",
    "--pattern": "prune.pattern",
    "--score-mode": "prune.score_mode",
    "--frozen-init": "prune.frozen_init",
    "--srste-decay": "prune.srste_decay",
    "--retrain": "prune.retrain",
    "--criterion": "prune.criterion",
    "--devices": "run.devices",
    "--parallel": "run.parallel",
    "--controls-at": "run.controls_at",
    "--spawn": "run.spawn",
    "--controls": "run.controls",
    "--deterministic": "run.deterministic",
    "--barriers": "run.barriers",
    "--log": "run.log",
    "--slurm-partition": "slurm.partition",
    "--slurm-time": "slurm.time",
    "--slurm-gpus": "slurm.gpus",
    "--slurm-cpus": "slurm.cpus",
    "--slurm-mem": "slurm.mem",
    "--slurm-account": "slurm.account",
    "--slurm-qos": "slurm.qos",
    "--slurm-tasks": "slurm.tasks",
}
"""The flags of ``lt run`` that set a spec field; each one's help is the field's doc."""

_METAVARS = {
    "--one-shot": "PM[,PM...]",
    "--pattern": "N:M",
    "--spawn": "LIST",
    "--controls": "LIST",
    "--devices": "N",
    "--log": "tensorboard|wandb|mlflow",
}


def _field_option(flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The Click option of `flag`: its type, choices and help from its field's row."""
    key = FIELD_FLAGS[flag]
    field = FIELDS[key]
    where = "; not part of the run id" if key.split(".")[0] in UNHASHED_SECTIONS else ""
    options: dict[str, Any] = {"help": f"{field.doc} [spec field {key}{where}]"}
    if field.kind == "bool":
        options.update(is_flag=True, default=None)
    elif field.choices:
        options.update(type=click.Choice(field.choices))
    elif field.kind in ("int", "float"):
        options.update(type=int if field.kind == "int" else float)
    if flag in _METAVARS:
        options.update(metavar=_METAVARS[flag])
    return click.option(flag, _parameter(flag), **options)


def _parameter(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def field_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds every `FIELD_FLAGS` option to `command` (in the table's order in --help)."""
    for flag in reversed(FIELD_FLAGS):
        command = _field_option(flag)(command)
    return command


def _overrides(**flags: Any) -> dict[str, Any]:
    """The spec fields that the named `FIELD_FLAGS` values set."""
    keys = {_parameter(flag): key for flag, key in FIELD_FLAGS.items()}
    return {keys[name]: value for name, value in flags.items()}


def load_spec(experiment: str, settings: tuple[str, ...], **flags: Any) -> spec.Spec:
    """The spec `experiment` with `--set` assignments, then the named flags, applied."""
    loaded = spec.load(experiment)
    assigned = dict(spec.parse_assignment(s) for s in settings)
    return spec.apply_overrides(spec.apply_overrides(loaded, assigned), _overrides(**flags))


def complete_experiments(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion of EXPERIMENT: the specs shipped with lt and those in ./experiments
    that start with `incomplete`; a path (or a name matching none of them) completes as a
    file. Never fails."""
    try:
        if "/" in incomplete:
            return [CompletionItem(incomplete, type="file")]
        names = set(spec.shipped_specs()) | {p.stem for p in Path("experiments").glob("*.toml")}
        found = [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]
        return found or [CompletionItem(incomplete, type="file")]
    except Exception:  # completion must never print a traceback into the shell
        return []


JSON_OPTION = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document instead of text: the same numbers, accuracies as fractions.",
)


@cli.command()
@click.argument("experiment", shell_complete=complete_experiments)
@field_options
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set any spec field, like --set train.weight_decay=1e-4 (repeatable).",
)
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="Run the experiment at each value of a field, each point its own run (cached and "
    "resumable); several --sweep flags run their product, the first varying slowest "
    "(repeatable). Values read like --set values, separated by commas outside brackets: a "
    "list field takes one TOML list per value, like prune.one_shot=[50,20],[10]. Every "
    "point is checked before anything trains. With --sweep, --name names the sweep (for "
    "`lt compare NAME`) and the output is the sweep's runs.",
)
@click.option(
    "--progress-every",
    type=FiniteFloatRange(min=1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="When stderr is not a terminal (a log file, a batch scheduler), print a progress "
    "line this often.",
)
@click.option(
    "--checkpoint-every",
    type=FiniteFloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Save a training group's state at most this often, between jitted calls, so that "
    "a killed run resumes mid-level (0: after every call).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray", "slurm"]),
    default="local",
    show_default=True,
    help="Where cells train: this process (local), as tasks on a standing Ray cluster "
    "(ray; pip install 'lt[ray]'), or as Slurm job arrays (slurm; pip install 'lt[slurm]'; "
    "resources from the --slurm-* flags). The cluster's nodes must all see the store.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="With --executor slurm: exit once the ready cells are submitted; the jobs submit "
    "the next levels themselves. lt status RUN shows them; the same lt run follows them.",
)
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="The Ray cluster's address for --executor ray (default: $RAY_ADDRESS, else the "
    "cluster `ray start` made on this machine).",
)
@click.option(
    "--distributed",
    is_flag=True,
    help="Be one process of a multi-host job (jax.distributed) that trains each cell over "
    "every device of every process, each feeding its share of the batch; process 0 writes "
    "the store and prints. Under Slurm, run the same command in every task (srun); "
    "elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.",
)
@click.option("--name", help="A human alias for the run (not part of the run id).")
@click.option(
    "--report",
    "report_to",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write `lt report`'s HTML page of the run to PATH (.html), rewritten after "
    "every level as it is stored (with --executor ray: when the run ends; with --sweep: every "
    "point's run, when the sweep ends). Checked before anything trains.",
)
@JSON_OPTION
@click.option(
    "--grouping",
    type=click.Choice(["auto", "vmap", "serial", "host"]),
    default="auto",
    show_default=True,
    help="How a level's cells train: side by side in one program (vmap), one after another "
    "in it (serial), one step per call (host: convolutions on a CPU), or auto: host where "
    "needed, else whichever measured faster here. Results agree to float rounding.",
)
@STORE_OPTION
@DATA_DIR_OPTION
def run(
    experiment: str,
    settings: tuple[str, ...],
    name: str | None,
    store: Path | None,
    data_dir: Path | None,
    grouping: str,
    progress_every: float,
    checkpoint_every: float,
    executor: str,
    address: str | None,
    detach: bool,
    distributed: bool,
    as_json: bool,
    sweeps: tuple[str, ...],
    report_to: Path | None,
    **flags: Any,
) -> None:
    """Run, resume or extend the experiment EXPERIMENT.

    EXPERIMENT is experiments/NAME.toml in the working directory, a spec shipped with lt
    (mnist-lenet, fashion-lenet, smoke, ...), or a path to a .toml file. Finished cells are
    never trained again: rerunning prints the table, --rounds/--replicates beyond what is
    stored train only the new cells, and a killed run resumes where it stopped.

    The final table goes to stdout (with --json: `lt show --json`'s document); progress and
    notes go to stderr.
    """
    loaded = load_spec(experiment, settings, **flags)
    if loaded["model.name"] in models.ALIASES:
        click.echo(f"note: {models.get(loaded['model.name']).note}", err=True)
    target = Store(store or default_store())
    live = session.LiveOutputs(
        log=loaded["run.log"],
        report=reporting.check_report_path(report_to, "--report") if report_to else None,
        note=lambda text: click.echo(text, err=True),
    )
    progress = CliProgress(loaded["run.rounds"], progress_every)
    where = dict(data_dir=data_dir, name=name, progress=progress, grouping=grouping)
    where.update(checkpoint_seconds=checkpoint_every)
    where.update(executor=executor, address=address, progress_every=progress_every)
    if distributed and sweeps:
        raise click.UsageError("--distributed trains one run; drop --sweep")
    if distributed:
        where.update(distributed=True)
    if detach:
        where.update(detach=True)
    if sweeps:
        fixed = {spec.parse_assignment(s)[0] for s in settings}
        fixed |= {key for key, value in _overrides(**flags).items() if value is not None}
        axes = sweep.parse_axes(sweeps, fixed)
        done = session.run_sweep(loaded, axes, target, live, **where)
        if as_json:
            click.echo(report.to_json(listing.sweep_json(target, done.id)))
        else:
            click.echo(listing.sweep_text(target, done.id))
        return
    run_id = session.run(loaded, target, live, **where)
    if hosts.writer():  # in a multi-host job, process 0 alone prints
        _print_run(target, run_id, as_json)


def _print_run(target: Store, run_id: str, as_json: bool) -> None:
    if as_json:
        click.echo(report.to_json(report.run_json(target, run_id)))
    else:
        click.echo(report.run_text(target, run_id))


@cli.command(name="ls")
@JSON_OPTION
@STORE_OPTION
def list_runs(as_json: bool, store: Path | None) -> None:
    """List the runs in the store.

    With --json: an array of objects with run_id, names, experiment, dataset, model,
    levels, replicates, cells, best_test_acc (a fraction) and bytes, and for a run that is
    a point of a sweep, sweeps: [{"id", "name", "index", "points", "axes": [{"field",
    "value"}]}]. In the text, a sweep's runs are listed under its own header, a column per
    swept field.
    """
    target = Store(store or default_store())
    ids = target.run_ids()
    if not ids:
        click.echo(f"no runs in {target.root}", err=True)
    overviews = [listing.run_overview(target, i) for i in ids]
    if as_json:
        click.echo(report.to_json(overviews))
    elif overviews:
        click.echo(listing.runs_listing(overviews))


@cli.command()
@click.argument("run_ref", metavar="RUN", shell_complete=complete_runs)
@JSON_OPTION
@STORE_OPTION
def show(run_ref: str, as_json: bool, store: Path | None) -> None:
    """Show a run's hyperparameters and per-level table.

    RUN is a run's --name, a prefix of its id, or the experiment it was made from.

    \b
    With --json: {"run_id", "experiment", "names", "outdated", "descriptor" (the full
    hyperparameters), "levels": [{"level", "percent_remaining", "members": {kind: {field:
    {"mean", "std", "n", "diverged"}}}}], "notes"}; fields are early_stop_iter,
    early_stop_test_acc and final_test_acc, accuracies as fractions.
    """
    target = Store(store or default_store())
    _print_run(target, target.resolve(run_ref), as_json)


@cli.command()
@click.argument("run_ref", metavar="RUN", shell_complete=complete_runs)
@STORE_OPTION
def path(run_ref: str, store: Path | None) -> None:
    """Print the folder of RUN in the store (absolute), as in `cd "$(lt path RUN)"`."""
    target = Store(store or default_store())
    click.echo(target.run_dir(target.resolve(run_ref)).absolute())


@cli.command()
@click.argument("run_ref", metavar="RUN", shell_complete=complete_runs)
@STORE_OPTION
def status(run_ref: str, store: Path | None) -> None:
    """Show what of RUN is stored, running and queued: its cells' Slurm tasks (--executor
    slurm) by state and job, cells other drivers hold, and each task that ended with its
    cells unfinished, with the end of its log (the same lt run resubmits those cells)."""
    target = Store(store or default_store())
    click.echo(executor_slurm.status(target, target.resolve(run_ref)))


for command in (data, compare, diff, export, plot, reproduce, rm, gc, ticket):
    cli.add_command(command)
cli.add_command(report_command)


def main() -> None:
    try:
        cli(prog_name="lt")
    except SystemExit as done:
        if done.code and hosts.count() > 1:  # a failed multi-host job stops at once
            hosts.exit_now(done.code if isinstance(done.code, int) else 1)
        raise
