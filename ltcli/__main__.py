"""``python -m ltcli`` is the `lt` command."""

from ltcli.cli.main import main

main()
