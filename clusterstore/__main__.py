"""``python -m clusterstore``: the command-line interface."""

from clusterstore.cli.main import main

main()
