"""JSON with extra types: round trips, tagged escapes, clear errors, never pickle."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from khadem_nb import JobRecord, SerializationError, UnknownJobError
from khadem_nb.registry import JobFactoryRegistry
from khadem_nb.serializer import QueueJobSerializer, UnreadablePayload, decode_value, dumps, encode_value


def roundtrip(value: Any) -> Any:
    return decode_value(json.loads(dumps(encode_value(value))))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 1, 2),
        date(2026, 11, 29),
        timedelta(seconds=90.5),
        Decimal("3.141592653589793238462643383279"),
        uuid4(),
        (1, "two", (3.0,)),
        b"\x00\xffbytes",
        {1, 2, 3},
        {"__kn__": "not a tag", "x": 1},
        [math.inf, -math.inf],
        {"nested": [{"when": date(2020, 1, 1)}, (Decimal("1.5"), UUID(int=1))]},
    ],
)
def test_extra_types_round_trip(value: Any) -> None:
    assert roundtrip(value) == value
    assert type(roundtrip(value)) is type(value)


def test_nan_round_trips() -> None:
    assert math.isnan(roundtrip(float("nan")))


@pytest.mark.parametrize(
    "value",
    [np.float32(1.5), np.int64(-7), np.bool_(True), np.uint8(255), np.complex128(1 + 2j),
],
)
def test_numpy_scalars_keep_their_dtype(value: Any) -> None:
    back = roundtrip(value)
    assert back == value and back.dtype == value.dtype


@pytest.mark.parametrize(
    "array",
    [np.arange(12, dtype=np.int32).reshape(3, 4), np.linspace(0, 1, 5), np.array([[True, False]]),
     np.array([1 + 1j, 2 - 1j]), np.zeros((0, 3)), np.array(["a", "bc"])],
)
def test_numpy_arrays_keep_dtype_and_shape(array: Any) -> None:
    back = roundtrip(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"f": lambda: 1}, r"value\['f'\] is of type builtins.function"),
        ({"k": {1: "int key"}}, r"value\['k'\] has a key 1 of type int"),
        ([object()], r"value\[0\] is of type builtins.object"),
        (np.array([object()]), "numpy array of dtype object"),
    ],
)
def test_unsupported_values_name_where_they_are(value: Any, fragment: str) -> None:
    with pytest.raises(SerializationError, match=fragment):
        encode_value(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children)
    | st.tuples(children, children),
    max_leaves=20,
)


@given(json_values)
def test_any_supported_value_round_trips(value: Any) -> None:
    assert roundtrip(value) == value


def test_unknown_job_name_is_a_clear_error() -> None:
    serializer = QueueJobSerializer(JobFactoryRegistry())
    with pytest.raises(UnknownJobError, match="no job factory is registered for 'Nope'"):
        serializer.decode_job("Nope", {})


def test_a_registered_job_whose_payload_cannot_be_decoded_says_why() -> None:
    registry = JobFactoryRegistry()
    registry.register("Known", lambda data: data)
    serializer = QueueJobSerializer(registry)
    with pytest.raises(SerializationError, match="payload of job 'Known' is list, not an object") as info:
        serializer.decode_job("Known", [1, 2])
    assert not isinstance(info.value, UnknownJobError)
    with pytest.raises(SerializationError, match="record of job 'Known' could not be read: torn"):
        serializer.decode_job("Known", UnreadablePayload("torn"))
    with pytest.raises(UnknownJobError, match="defined in a notebook cell"):
        serializer.decode_job("__main__.train", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "is list, not an object"),
     ('{"v": 99}', "wire version 99"), ('{"v": 1, "id": "x"}', "malformed job record")],
)
def test_malformed_records_are_serialization_errors(text: str, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        JobRecord.from_wire(text)


def test_record_wire_format_is_readable_and_versioned() -> None:
    record = JobRecord(id="abc", name="Echo", payload={"value": 1})
    data = json.loads(record.to_wire())
    assert data["v"] == 1 and data["job"] == "Echo" and data["status"] == "queued"
    assert JobRecord.from_wire(record.to_wire()) == record


def test_a_job_class_whose_jobs_name_themselves_is_not_named_once_for_all() -> None:
    """The serializer remembers the name of a job class, except where each job names itself
    (a notebook's job functions share one class)."""
    from khadem_nb import QueueJob

    class Named(QueueJob):
        _abstract_job = True

        def __init__(self, label: str, value: Any = None) -> None:
            self.label, self.value = label, value

        def job_name(self) -> str:  # type: ignore[override]
            return f"fn.{self.label}"

    serializer = QueueJobSerializer(JobFactoryRegistry())
    assert [serializer.encode_job(Named(x))[0] for x in ("a", "b", "a")] == ["fn.a", "fn.b", "fn.a"]
    with pytest.raises(SerializationError, match=r"fn\.c argument\['value'\] is of type"):
        serializer.encode_job(Named("c", object()))
