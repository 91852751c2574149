"""How one entity's features become one stored value, and back (``sqlite_store.py``).

A feature view's row is a msgpack map of feature name to value, where each value is the
Python value Feast's own conversion gives for the feature's type (what
``feast_value_type_to_python_type`` returns). One exception, for size and speed: a
``FLOAT_LIST`` (the 384-float interest vector) is stored as packed little-endian float32,
which is also exactly the rounding Feast's ``FloatList`` proto applies.

msgpack rather than JSON: floats round-trip bit for bit (NaN and infinities included),
bytes stay bytes, and it packs a 50-feature profile in a few microseconds. Rows carry
their feature names, so a view that gains a feature still reads its older rows (the new
feature reads as missing, as in Feast's own layout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType

_F4 = np.dtype("<f4")

SUPPORTED_TYPES = frozenset(
    {
        ValueType.STRING,
        ValueType.BYTES,
        ValueType.INT32,
        ValueType.INT64,
        ValueType.FLOAT,
        ValueType.DOUBLE,
        ValueType.BOOL,
        ValueType.STRING_LIST,
        ValueType.BYTES_LIST,
        ValueType.INT32_LIST,
        ValueType.INT64_LIST,
        ValueType.FLOAT_LIST,
        ValueType.DOUBLE_LIST,
        ValueType.BOOL_LIST,
    }
)
"""What msgpack holds as the Python value Feast gives (every type our views use, and their
close relatives). Values must be plain Python: a numpy scalar fails loudly at packing."""


def check_types(view: str, types: Mapping[str, ValueType]) -> None:
    """Refuse, at ``feast apply``, a view this layout cannot store faithfully."""
    unsupported = {name: t.name for name, t in types.items() if t not in SUPPORTED_TYPES}
    if unsupported:
        raise TypeError(
            f"feature view {view!r}: types {unsupported} are not supported by the "
            "one-row-per-entity SQLite store; use Feast's stock 'sqlite' store for it"
        )


class RowCodec:
    """One view's rows: its features, and which of them are packed float32 arrays."""

    def __init__(self, types: Mapping[str, ValueType]):
        self.names = list(types)
        self.float_lists = [n for n, t in types.items() if t is ValueType.FLOAT_LIST]

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The stored form of one entity's features (``None``: the feature has no value)."""
        packed = {name: values.get(name) for name in self.names}
        for name in self.float_lists:
            if packed[name] is not None:
                packed[name] = np.asarray(packed[name], dtype=_F4).tobytes()
        return msgpack.packb(packed, use_bin_type=True)

    def decode(self, blob: bytes) -> dict[str, Any]:
        """The Python values of a stored row; features the row lacks are ``None``."""
        stored = msgpack.unpackb(blob, raw=False)
        out = {name: stored.get(name) for name in self.names}
        for name in self.float_lists:
            if out[name] is not None:
                out[name] = np.frombuffer(out[name], dtype=_F4).tolist()
        return out


def values_from_protos(protos: Mapping[str, ValueProto]) -> dict[str, Any]:
    """What a Feast write (``online_write_batch``: materialization, ``push``) hands over,
    as the Python values ``RowCodec.encode`` stores."""
    return {name: feast_value_type_to_python_type(proto) for name, proto in protos.items()}


def protos_from_values(
    values: Mapping[str, Any], types: Mapping[str, ValueType]
) -> dict[str, ValueProto]:
    """A stored row as Feast's readers expect it (``online_read``: ``get_online_features``)."""
    return {name: to_protos([values.get(name)], t)[0] for name, t in types.items()}


# Value protos built directly for the types the stream writes: Feast's generic converter
# (type inference and checks per value) was half of a flush's time.
FAST_PROTO: dict[ValueType, Callable[[Any], ValueProto]] = {
    ValueType.STRING: lambda v: ValueProto(string_val=v),
    ValueType.INT64: lambda v: ValueProto(int64_val=v),
    ValueType.DOUBLE: lambda v: ValueProto(double_val=v),
    ValueType.STRING_LIST: lambda v: ValueProto(string_list_val=StringList(val=v)),
    ValueType.INT64_LIST: lambda v: ValueProto(int64_list_val=Int64List(val=v)),
    ValueType.DOUBLE_LIST: lambda v: ValueProto(double_list_val=DoubleList(val=v)),
    ValueType.FLOAT_LIST: lambda v: ValueProto(float_list_val=FloatList(val=v)),
}


def to_protos(values: Sequence[Any], value_type: ValueType) -> list[ValueProto]:
    """Python values of one type as Feast value protos (``None``: an empty proto)."""
    fast = FAST_PROTO.get(value_type)
    if fast is None:
        return python_values_to_proto_values(list(values), value_type)
    return [ValueProto() if v is None else fast(v) for v in values]
