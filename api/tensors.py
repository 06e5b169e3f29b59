"""Open Inference Protocol tensors to named-field records: one input tensor per field, JSON or binary data.

A request's shape and types are checked here (every tensor holds one value per record, all tensors the same
number); what the values mean is checked by the schema's validation, as for every other route, so an error
names the record and the field.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from batcomputer.errors import BadRequest
from batcomputer.models.schema import CATEGORICAL, Field

BINARY_HEADER = "Inference-Header-Content-Length"  # Triton's binary tensor extension
# Fixed-size datatypes of the protocol and their struct codes (little-endian, as the extension specifies).
FIXED = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b", "INT16": "h",
         "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f", "FP64": "d"}
DATATYPES = (*FIXED, "BYTES")


def datatype(field: Field) -> str:
    """The tensor datatype of a field: BYTES for categories, INT64 or FP64 for numbers."""
    if field.kind == CATEGORICAL:
        return "BYTES"
    return "INT64" if field.integer else "FP64"


@dataclass(frozen=True)
class Inference:
    """A decoded infer request: its records, the outputs it asks for (None: all) and its id."""

    records: list[dict[str, Any]]
    outputs: list[str] | None
    id: str | None


def decode_request(body: Any, binary: bytes = b"") -> Inference:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with \"inputs\": one tensor per field", field="body")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("inputs must be a non-empty array of tensors, one per field", field="inputs")
    columns: dict[str, list[Any]] = {}
    offset = 0
    for index, tensor in enumerate(inputs):
        name, values, used = decode_tensor(tensor, index, binary, offset)
        offset += used
        if name in columns:
            raise BadRequest(f"inputs[{index}]: the field {name!r} is given twice", field=f"inputs[{index}].name")
        columns[name] = values
    if offset != len(binary):
        raise BadRequest(f"the binary data holds {len(binary)} bytes and the tensors' binary_data_size add up to "
                         f"{offset}", field=BINARY_HEADER)
    counts = {name: len(values) for name, values in columns.items()}
    if len(set(counts.values())) > 1:
        described = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise BadRequest(f"every input must hold one value per record; they hold {described}", field="inputs")
    count = next(iter(counts.values()))
    if count == 0:
        raise BadRequest("the inputs hold no records (shape [0])", field="inputs")
    records = [{name: values[row] for name, values in columns.items()} for row in range(count)]
    return Inference(records, requested(body.get("outputs")), request_id(body.get("id")))


def decode_tensor(tensor: Any, index: int, binary: bytes, offset: int) -> tuple[str, list[Any], int]:
    """A tensor's field name, its values and how many bytes of the binary data it took."""
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise BadRequest(f"{where} must be a tensor object (name, shape, datatype, data)", field=where)
    name, shape, kind = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be the name of a field", field=f"{where}.name")
    where = f"inputs[{index}] ({name})"
    if kind not in DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of {', '.join(DATATYPES)}, not {kind!r}", field=name)
    if (not isinstance(shape, list) or not shape or len(shape) > 2
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)):
        raise BadRequest(f"{where}: shape must be [n] or [n, 1] (one value per record), not {shape!r}", field=name)
    expected = math.prod(shape)
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: parameters must be an object", field=name)
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise BadRequest(f"{where}: binary_data_size {size!r} does not fit the {len(binary) - offset} bytes of "
                             f"binary data left", field=name)
        values = unpack(binary[offset:offset + size], kind, where, name)
        used = size
    else:
        if "data" not in tensor:
            raise BadRequest(f"{where}: data is missing (give it, or binary_data_size with binary data)", field=name)
        values = flatten(tensor["data"])
        used = 0
    if len(values) != expected:
        raise BadRequest(f"{where}: shape {shape} holds {expected} values and data has {len(values)}", field=name)
    return name, values, used


def flatten(data: Any) -> list[Any]:
    """Tensor data as a flat list, whether it came flat or nested row by row."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(flatten(item))
        else:
            flat.append(item)
    return flat


def unpack(chunk: bytes, kind: str, where: str, name: str) -> list[Any]:
    """Binary tensor data: fixed-size little-endian values, or BYTES as 4-byte lengths each before its value."""
    if kind != "BYTES":
        width = struct.calcsize(FIXED[kind])
        if len(chunk) % width:
            raise BadRequest(f"{where}: {len(chunk)} bytes is not a whole number of {kind} values", field=name)
        return list(struct.unpack(f"<{len(chunk) // width}{FIXED[kind]}", chunk))
    values: list[Any] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise BadRequest(f"{where}: the BYTES data ends inside an element's length", field=name)
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise BadRequest(f"{where}: a BYTES element claims {length} bytes and {len(chunk) - position} are left",
                             field=name)
        try:
            values.append(chunk[position:position + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: a BYTES element is not UTF-8 text", field=name) from None
        position += length
    return values


def requested(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise BadRequest("outputs must be an array of objects with a name", field="outputs")
    return [o["name"] for o in outputs]


def request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise BadRequest("id must be a string of at most 200 characters", field="id")
    return value
