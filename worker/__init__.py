"""The scoring processes: Celery workers on Redis for single records (micro-batched) and Parquet files
(``parquet/``), the stream consumer, and the housekeeping every worker does (sweeps, files, webhooks)."""
