"""Batcomputer's shared contract: settings, errors, schema, bundles and the model registry."""

__version__ = "0.1.0"
