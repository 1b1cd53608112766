"""Errors the CLI turns into exit codes: `UsageError` exits 2, any other `LtError` exits 1."""


class LtError(Exception):
    """A failure the user can act on; the CLI prints its message and exits 1."""


class UsageError(LtError):
    """Bad input: an unknown field, a value out of range, missing data. Exit code 2.

    Raised before anything is written, so a rejected command leaves no trace.
    """


class InvariantError(LtError):
    """A lottery-ticket invariant was violated at run time; nothing of the level is stored."""
