from __future__ import annotations

import math

import pytest
from feast.protos.feast.types.Value_pb2 import FloatList
from feast.value_type import ValueType

from feature_repo.row_codec import RowCodec, check_types

TYPES = {
    "n": ValueType.INT64,
    "x": ValueType.DOUBLE,
    "s": ValueType.STRING,
    "tags": ValueType.STRING_LIST,
    "ts": ValueType.DOUBLE_LIST,
    "vec": ValueType.FLOAT_LIST,
}


def test_values_come_back_as_feast_would_give_them() -> None:
    row = {"n": 3, "x": 0.1, "s": "é", "tags": ["a", "b"], "ts": [1.5, 2.25], "vec": [0.1, 1e-3]}
    back = RowCodec(TYPES).decode(RowCodec(TYPES).encode(row))
    assert {k: back[k] for k in ("n", "x", "s", "tags", "ts")} == {
        k: row[k] for k in ("n", "x", "s", "tags", "ts")
    }
    assert back["vec"] == list(FloatList(val=row["vec"]).val)  # float32, as Feast rounds it
    assert back["vec"] != row["vec"]


def test_floats_round_trip_bit_for_bit_and_missing_features_read_as_none() -> None:
    row = {"x": math.nan, "ts": [math.inf, -0.0, 1 / 3], "vec": None}
    back = RowCodec(TYPES).decode(RowCodec(TYPES).encode(row))
    assert math.isnan(back["x"])
    assert back["ts"] == [math.inf, -0.0, 1 / 3]
    assert math.copysign(1, back["ts"][1]) == -1
    assert back["n"] is None and back["vec"] is None
    older = RowCodec({"n": ValueType.INT64}).encode({"n": 1})  # before "x" was added
    assert RowCodec(TYPES).decode(older) == {**dict.fromkeys(TYPES), "n": 1}


def test_a_type_the_layout_cannot_hold_is_refused_at_apply() -> None:
    check_types("ok", TYPES)
    with pytest.raises(TypeError, match="UNIX_TIMESTAMP"):
        check_types("v", {"when": ValueType.UNIX_TIMESTAMP})
