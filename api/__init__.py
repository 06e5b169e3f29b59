"""The thin Flask gateway: validates named-field records against the pinned bundle's schema, enqueues jobs,
batches and stream entries, serves results, OpenAPI docs and the web client; never imports scikit-learn."""
