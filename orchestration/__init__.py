"""Prefect flows: scheduled retraining, comparison with production, publication and promotion."""
