"""The gateway's HTTP routes, one blueprint per resource: health, models, jobs, batches, streams,
retraining and the seed-compatible routes."""
