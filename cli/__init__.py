"""The ``batcomputer`` command line: the roof of the house, the one package that may import every component."""
