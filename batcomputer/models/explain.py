"""Why a prediction: each field's Shapley contribution to each output's probability, against a background sample.

The value of a coalition S of fields for a record x is the mean prediction over the background rows b with
x's values in S and b's elsewhere (interventional Shapley values). The baseline is the value of the empty
coalition (the mean prediction over the background), and a record's contributions add up to its prediction
minus the baseline, exactly (up to float rounding).

Up to ``EXACT_FIELDS`` fields every coalition is evaluated (2^M of them; background rows that agree on the
fields a coalition takes from the background are evaluated once and weighted by their count). Beyond that, a
sampling estimate: ``PERMUTATIONS`` random orders of the fields (each with its reverse, which lowers the
variance), each record's contributions the mean of its marginal contributions along them, with their standard
error. Either way all of a call's records and coalitions are scored in a few vectorised ``predict_proba``
calls of at most ``MAX_ROWS`` rows (as many records at once as fit), never one per record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from batcomputer.models.bundle import Bundle
from batcomputer.models.schema import CATEGORICAL

EXACT_FIELDS = 10  # up to this many fields, exact values (1,024 coalitions)
PERMUTATIONS = 32  # orders sampled beyond it (each with its reverse)
MAX_ROWS = 262_144  # rows per predict_proba call of an explanation
BACKGROUND_ROWS = 100  # background rows used (a bundle keeps a few hundred, drawn from its training rows)


def explain(bundle: Bundle, records: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Each record's explanation: ``{"baseline": {output: p}, "contributions": {output: {field: value}}}``
    (plus ``"error"`` with the same shape, the standard error of each value, when they were sampled)."""
    from batcomputer.models.scoring import classes_of

    if not records:
        return []
    background = background_of(bundle)
    fields = bundle.schema.field_names
    outputs, _ = classes_of(bundle)
    x = np.array([[record.get(name) for name in fields] for record in records], dtype=object)
    block = max(1, MAX_ROWS // rows_per_record(bundle))  # records explained per call: memory stays bounded
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for start in range(0, len(records), block):
        if len(fields) <= EXACT_FIELDS:
            parts.append((*_exact(bundle, x[start:start + block], background), None))
        else:
            parts.append(_sampled(bundle, x[start:start + block], background, np.random.default_rng(seed)))
    baseline = parts[0][0]
    phi = np.concatenate([p[1] for p in parts])
    errors = [p[2] for p in parts if p[2] is not None]
    error = np.concatenate(errors) if errors else None
    found = []
    for r in range(len(records)):
        item: dict[str, Any] = {
            "baseline": {out: float(baseline[o]) for o, out in enumerate(outputs)},
            "contributions": {out: {name: float(phi[r, i, o]) for i, name in enumerate(fields)}
                              for o, out in enumerate(outputs)}}
        if error is not None:
            item["error"] = {out: {name: float(error[r, i, o]) for i, name in enumerate(fields)}
                             for o, out in enumerate(outputs)}
        found.append(item)
    return found


def rows_per_record(bundle: Bundle) -> int:
    """At most how many rows explaining one record scores (what its time limit allows for)."""
    fields = len(bundle.schema.field_names)
    background = min(len(bundle.background or ()), BACKGROUND_ROWS)
    if fields <= EXACT_FIELDS:
        return (1 << fields) * background
    return 2 * PERMUTATIONS * (fields + 1) * background


def background_of(bundle: Bundle) -> np.ndarray:
    """The bundle's background rows (fields in schema order) as an object array; a bundle published without
    them cannot be explained."""
    from batcomputer.errors import NotExplainable

    rows = bundle.background
    if not rows:
        raise NotExplainable(f"{bundle.ref} was published without a background sample and cannot be explained; "
                             f"retrain it to explain its predictions", field="explain")
    fields = bundle.schema.field_names
    return np.array([[row.get(name) for name in fields] for row in rows[:BACKGROUND_ROWS]], dtype=object)


def _predict(bundle: Bundle, columns: list[np.ndarray]) -> np.ndarray:
    """Probabilities of the rows given column by column (fields in schema order), in calls of ``MAX_ROWS``."""
    import pyarrow as pa

    from batcomputer.models.scoring import predict_proba

    schema = bundle.schema
    types = [pa.string() if f.kind == CATEGORICAL else pa.float64() for f in schema.fields]
    total = len(columns[0])
    parts = []
    for start in range(0, total, MAX_ROWS):
        stop = min(start + MAX_ROWS, total)
        table = pa.table({name: pa.array(column[start:stop], type=kind, from_pandas=True)
                          for name, column, kind in zip(schema.field_names, columns, types, strict=True)})
        parts.append(np.asarray(predict_proba(bundle.pipeline, table, schema.field_names), dtype=np.float64))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _unique(background: np.ndarray, free: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct background rows on the ``free`` fields (full rows, one of each) and each one's weight."""
    counts: dict[tuple[Any, ...], list[int]] = {}
    for k, row in enumerate(background):
        key = tuple(row[i] for i in free)
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [k, 1]
    picks = np.array([k for k, _ in counts.values()])
    weights = np.array([n for _, n in counts.values()], dtype=np.float64) / len(background)
    return background[picks], weights


def _exact(bundle: Bundle, x: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The baseline (per output) and every record's exact contributions (records x fields x outputs)."""
    records, m = x.shape
    coalitions = 1 << m
    blocks = []  # per coalition: (its rows' count per record, weights)
    columns: list[list[np.ndarray]] = [[] for _ in range(m)]
    for c in range(coalitions):
        free = [i for i in range(m) if not c >> i & 1]
        rows, weights = _unique(background, free)
        per = len(rows)
        for i in range(m):
            if c >> i & 1:
                columns[i].append(np.repeat(x[:, i], per))
            else:
                columns[i].append(np.tile(rows[:, i], records))
        blocks.append((per, weights))
    probabilities = _predict(bundle, [np.concatenate(parts) for parts in columns])
    outputs = probabilities.shape[1]
    values = np.empty((records, coalitions, outputs))
    offset = 0
    for c, (per, weights) in enumerate(blocks):
        block = probabilities[offset:offset + records * per].reshape(records, per, outputs)
        values[:, c, :] = np.einsum("rko,k->ro", block, weights)
        offset += records * per
    sizes = np.array([bin(c).count("1") for c in range(coalitions)])
    phi = np.zeros((records, m, outputs))
    for i in range(m):
        without = np.array([c for c in range(coalitions) if not c >> i & 1])
        weight = np.array([math.factorial(s) * math.factorial(m - s - 1) for s in sizes[without]],
                          dtype=np.float64) / math.factorial(m)
        phi[:, i, :] = np.einsum("rco,c->ro", values[:, without | (1 << i), :] - values[:, without, :], weight)
    return values[0, 0, :], phi


def _sampled(bundle: Bundle, x: np.ndarray, background: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contributions estimated along sampled orders of the fields (each with its reverse), their standard
    errors, and the baseline. Along each order a record's marginal contributions add up to its prediction
    minus the baseline, so the estimate does too."""
    records, m = x.shape
    orders = []
    for _ in range(PERMUTATIONS):
        order = rng.permutation(m)
        orders += [order, order[::-1]]
    k = len(background)
    steps = m + 1  # coalitions along one order: none, the first field, ..., all
    columns = []
    for i in range(m):
        parts = []
        for order in orders:
            position = int(np.nonzero(order == i)[0][0])
            for step in range(steps):  # field i comes from the record once it has joined the coalition
                parts.append(np.repeat(x[:, i], k) if step > position else np.tile(background[:, i], records))
        columns.append(np.concatenate(parts))
    probabilities = _predict(bundle, columns)
    outputs = probabilities.shape[1]
    values = probabilities.reshape(len(orders), steps, records, k, outputs).mean(axis=3)
    marginal = np.zeros((len(orders), records, m, outputs))
    for p, order in enumerate(orders):
        for step, field_index in enumerate(order):
            marginal[p, :, field_index, :] = values[p, step + 1] - values[p, step]
    phi = marginal.mean(axis=0)
    pairs = (marginal[0::2] + marginal[1::2]) / 2  # an order and its reverse are one sample
    error = pairs.std(axis=0, ddof=1) / math.sqrt(len(pairs))
    return values[0, 0, 0, :], phi, error
