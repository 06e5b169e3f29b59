"""Rewrite a Parquet file's footer: the Thrift (compact protocol) FileMetaData at the end of the file, its
length in the 4 bytes before the trailing ``PAR1``. The tests use it to make files whose metadata lies (a
file that claims billions of rows) out of small valid ones; the column data stays as written.

The footer is decoded into a tree of fields that encodes back to the very same bytes, edited, and encoded
again (a changed integer may take more bytes: the length before ``PAR1`` is rewritten to match).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAGIC = b"PAR1"
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)

# Field ids of parquet.thrift.
FILE_NUM_ROWS, FILE_ROW_GROUPS = 3, 4
GROUP_COLUMNS, GROUP_TOTAL_BYTE_SIZE, GROUP_NUM_ROWS = 1, 2, 3
CHUNK_META_DATA = 3
META_NUM_VALUES, META_UNCOMPRESSED, META_COMPRESSED = 5, 6, 7


@dataclass
class Field:
    id: int
    type: int
    value: Any


@dataclass
class Sequence:
    """A list or set: its element type and its elements."""

    element: int
    items: list[Any]


@dataclass
class Mapping:
    key: int
    value: int
    items: list[tuple[Any, Any]]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, count: int) -> bytes:
        self.at += count
        return self.data[self.at - count:self.at]

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):  # inside a list or map: one byte each
            return self.byte() == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            return self.take(8)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            return Sequence(head & 0x0F, [self.value(head & 0x0F) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if not size:
                return Mapping(0, 0, [])
            types = self.byte()
            return Mapping(types >> 4, types & 0x0F,
                           [(self.value(types >> 4), self.value(types & 0x0F)) for _ in range(size)])
        if kind == STRUCT:
            return self.fields()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def fields(self) -> list[Field]:
        found: list[Field] = []
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == STOP:
                return found
            last = last + (head >> 4) if head >> 4 else self.zigzag()
            found.append(Field(last, kind, kind == TRUE if kind in (TRUE, FALSE) else self.value(kind)))


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while True:
            if n < 0x80:
                self.out.append(n)
                return
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (TRUE, FALSE):
            self.out.append(TRUE if value else FALSE)
        elif kind == BYTE:
            self.out.append(value)
        elif kind in (I16, I32, I64):
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out += value
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            size = len(value.items)
            self.out.append((min(size, 15) << 4) | value.element)
            if size >= 15:
                self.varint(size)
            for item in value.items:
                self.value(value.element, item)
        elif kind == MAP:
            self.varint(len(value.items))
            if value.items:
                self.out.append((value.key << 4) | value.value)
            for key, item in value.items:
                self.value(value.key, key)
                self.value(value.value, item)
        elif kind == STRUCT:
            self.fields(value)
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")

    def fields(self, fields: list[Field]) -> None:
        last = 0
        for field in fields:
            kind = (TRUE if field.value else FALSE) if field.type in (TRUE, FALSE) else field.type
            delta = field.id - last
            if 0 < delta <= 15:
                self.out.append((delta << 4) | kind)
            else:
                self.out.append(kind)
                self.zigzag(field.id)
            if field.type not in (TRUE, FALSE):
                self.value(field.type, field.value)
            last = field.id
        self.out.append(STOP)


def split(data: bytes) -> tuple[bytes, list[Field]]:
    """The file's bytes before the footer, and the footer decoded."""
    if data[-4:] != MAGIC:
        raise ValueError("not a Parquet file: no PAR1 at the end")
    (length,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - length
    reader = _Reader(data[start:-8])
    footer = reader.fields()
    if reader.at != length:
        raise ValueError(f"the footer is {length} bytes and its FileMetaData {reader.at}")
    return data[:start], footer


def join(body: bytes, footer: list[Field]) -> bytes:
    writer = _Writer()
    writer.fields(footer)
    return body + bytes(writer.out) + struct.pack("<I", len(writer.out)) + MAGIC


def field(fields: list[Field], id: int) -> Field:
    return next(f for f in fields if f.id == id)


def rewrite(data: bytes, edit: Callable[[list[Field]], None]) -> bytes:
    """``data`` with its footer changed in place by ``edit``."""
    body, footer = split(data)
    edit(footer)
    return join(body, footer)


def row_groups(footer: list[Field]) -> list[list[Field]]:
    return field(footer, FILE_ROW_GROUPS).value.items  # type: ignore[no-any-return]


def column_meta(group: list[Field]) -> list[list[Field]]:
    return [field(chunk, CHUNK_META_DATA).value for chunk in field(group, GROUP_COLUMNS).value.items]


def claim_rows(data: bytes, rows: int, values_too: bool = False) -> bytes:
    """``data`` (one row group) with a footer that says the file and its row group hold ``rows`` rows; with
    ``values_too`` every column chunk says it holds as many values, so that the metadata agrees with itself
    and only the data pages are short."""

    def edit(footer: list[Field]) -> None:
        (group,) = row_groups(footer)
        field(footer, FILE_NUM_ROWS).value = rows
        field(group, GROUP_NUM_ROWS).value = rows
        if values_too:
            for meta in column_meta(group):
                field(meta, META_NUM_VALUES).value = rows

    return rewrite(data, edit)
