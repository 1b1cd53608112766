"""The `lt` command line: Click commands, thin. Each parses its input, calls one library
function, and prints; results go to stdout, progress and notes to stderr. The group and its
entry point are in `ltcli.cli.main`.

May import every package below it (results, train, storage, experiment, models, data,
science, core); nothing imports it but the entry points (``python -m ltcli``, the ``lt``
script).
"""
