"""The ``slurm`` section of the spec's field table (`ltcli.experiment.fields.FIELDS`): the
resources each task of ``--executor slurm`` asks for (`ltcli.train.executor_slurm`). Like
``run``, the section says where a run trains, never what: it is not in the run id."""

from __future__ import annotations

from ltcli.experiment.field_types import Field, integer, slurm_minutes, text


def _slurm_time_ok(value: str) -> bool:
    try:
        return slurm_minutes(value) > 0
    except ValueError:
        return False


SLURM_FIELDS: dict[str, Field] = {
    "slurm.partition": text(
        "a partition name, or empty",
        "--executor slurm: the partition each task is submitted to (empty: "
        "$SBATCH_PARTITION, else the cluster's default).",
    ),
    "slurm.time": text(
        "minutes, or one of sbatch's forms like 2-12:00:00 (over 0); empty for the default",
        "--executor slurm: each task's time limit (empty: $SBATCH_TIMELIMIT, else 60 "
        "minutes). A task reaching it is requeued and resumes from its level's checkpoint.",
        lambda v: v == "" or _slurm_time_ok(v),
    ),
    "slurm.gpus": integer(
        0, 0, "--executor slurm: GPUs per task (0: $SBATCH_GPUS_PER_TASK, else none)."
    ),
    "slurm.cpus": integer(0, 0, "--executor slurm: CPUs per task (0: the cluster's default)."),
    "slurm.mem": integer(
        0,
        0,
        "--executor slurm: memory per task in GB (0: $SBATCH_MEM_PER_NODE, else the "
        "cluster's default).",
    ),
    "slurm.account": text(
        "an account name, or empty",
        "--executor slurm: the account charged (empty: $SBATCH_ACCOUNT, else yours).",
    ),
    "slurm.qos": text(
        "a QoS name, or empty",
        "--executor slurm: the quality of service (empty: $SBATCH_QOS, else the default).",
    ),
    "slurm.tasks": integer(
        4,
        1,
        "--executor slurm: the most tasks in one job array; the cells of a level submitted "
        "together are split evenly among them, and each task trains its cells as one group.",
    ),
}
