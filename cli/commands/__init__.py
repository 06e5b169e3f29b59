"""The ``batcomputer`` commands, one module per group; ``cli.main`` registers them on the root group."""
