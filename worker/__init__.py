"""Celery workers on Redis: score single records, Parquet files and Redis streams."""
