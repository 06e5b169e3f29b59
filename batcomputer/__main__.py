"""``python -m batcomputer``: the command line."""

from batcomputer.cli import main

main()
