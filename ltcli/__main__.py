"""``python -m ltcli`` is the `lt` command."""

from ltcli.cli import main

main()
