"""The Redis job protocol: job records and states, the keyspace, Lua scripts, leases and sweeps, dead jobs and
replay, admission, batch accounting, streams, and the Celery message publishers write themselves.

One recovery system is in charge of a job: this package's records, leases and sweeper. A job record is the
source of truth and a queue message carries only job ids; ``start`` takes a job for one delivery only if it is
queued or its holder's lease lapsed, so a message Celery redelivers (late acks, visibility timeout) is a
harmless duplicate, and a message lost with its worker or with Redis is sent again by ``sweep`` from the record.
Celery's redelivery is a shortcut, never a requirement: the sweeper alone would recover every job.
"""
