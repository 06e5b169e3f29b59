"""Watching production: the capture of scored records (and, next, drift and live quality over them)."""
