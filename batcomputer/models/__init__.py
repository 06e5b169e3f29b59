"""The model contract: schemas of named fields, immutable bundles, the registry with its store and aliases,
the encoder fitted inside every pipeline, scoring and novelty warnings."""
