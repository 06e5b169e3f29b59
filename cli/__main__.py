"""``python -m cli``: the command line (what the ``batcomputer`` script runs)."""

from cli.main import main

main()
