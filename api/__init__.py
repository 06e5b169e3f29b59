"""The thin Flask gateway: validates named-field records, enqueues jobs, serves results and docs."""
