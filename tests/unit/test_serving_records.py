"""Request validation in serving: the record model built from the schema, and LoadedModel.validate."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from pydantic import BaseModel, ValidationError

from services.serving.holder import LoadedModel
from services.serving.records import RecordError, record_model
from shared.ml.datasets import DatasetSchema
from shared.ml.features import FeatureSpec
from tests.support.serving import loaded_model_stub

VALID: dict[str, Any] = {
    "age": 42,
    "income": 55_000.0,
    "tenure_months": 12,
    "monthly_spend": 70.5,
    "support_calls": 2,
    "last_login_days": 3.5,
    "region": "north",
    "plan": "plus",
}


@pytest.fixture(scope="module")
def record(schema: DatasetSchema, spec: FeatureSpec) -> type[BaseModel]:
    return record_model(schema, spec.input_columns)


@pytest.fixture(scope="module")
def loaded(schema: DatasetSchema, spec: FeatureSpec, record: type[BaseModel]) -> LoadedModel:
    return loaded_model_stub(record=record, columns=spec.input_columns, schema=schema)


def _errors(record: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        record.model_validate(data)
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in info.value.errors()]


# --- the record model ---------------------------------------------------------------------------------


def test_the_record_holds_exactly_the_model_inputs(record: type[BaseModel], spec: FeatureSpec) -> None:
    assert list(record.model_validate(VALID).model_dump()) == spec.input_columns


def test_a_valid_record_passes(record: type[BaseModel]) -> None:
    assert record.model_validate(VALID).model_dump() == VALID


def test_json_numbers_are_accepted_in_their_lax_forms(record: type[BaseModel]) -> None:
    dumped = record.model_validate({**VALID, "income": 55_000, "age": 42.0}).model_dump()
    assert dumped["income"] == 55_000.0 and isinstance(dumped["income"], float)
    assert dumped["age"] == 42 and isinstance(dumped["age"], int)


def test_a_missing_required_field_is_an_error(record: type[BaseModel]) -> None:
    data = {k: v for k, v in VALID.items() if k != "plan"}
    assert _errors(record, data) == [("plan", "missing")]


def test_a_required_field_may_not_be_null(record: type[BaseModel]) -> None:
    assert [loc for loc, _ in _errors(record, {**VALID, "age": None})] == ["age"]


def test_an_undeclared_field_is_an_error(record: type[BaseModel]) -> None:
    assert _errors(record, {**VALID, "shoe_size": 44}) == [("shoe_size", "extra_forbidden")]
    assert _errors(record, {**VALID, "Age": 42}) == [("Age", "extra_forbidden")]  # a typo of an input


def test_the_datasets_other_columns_are_accepted_and_left_out(record: type[BaseModel]) -> None:
    """A row sent as the data holds it (its id, timestamp, label: declared, but no model input) is
    answered, as MLflow's pyfunc answers a frame with extra columns; they never reach the model."""
    row = {**VALID, "customer_id": "c-1", "event_time": "2026-11-25T10:00:00", "churned": 1}
    assert record.model_validate(row).model_dump() == VALID


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("age", "abc", "int_parsing"),
        ("age", 42.5, "int_from_float"),
        ("income", "a lot", "float_parsing"),
        ("age", 7, "greater_than_equal"),
        ("age", 101, "less_than_equal"),
        ("income", -1.0, "greater_than_equal"),
        ("support_calls", 1_000, "less_than_equal"),
        ("last_login_days", 4_000.0, "less_than_equal"),
        ("region", "mars", "literal_error"),
        ("region", "North", "literal_error"),
        ("plan", "gold", "literal_error"),
    ],
)
def test_bad_values_are_errors_on_their_field(
    record: type[BaseModel], field: str, value: Any, error: str
) -> None:
    assert _errors(record, {**VALID, field: value}) == [(field, error)]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(record: type[BaseModel], value: float) -> None:
    assert [loc for loc, _ in _errors(record, {**VALID, "income": value})] == ["income"]
    assert [loc for loc, _ in _errors(record, {**VALID, "last_login_days": value})] == ["last_login_days"]


def test_the_optional_last_login_may_be_null_or_missing(record: type[BaseModel]) -> None:
    assert record.model_validate({**VALID, "last_login_days": None}).model_dump()["last_login_days"] is None
    missing = {k: v for k, v in VALID.items() if k != "last_login_days"}
    assert record.model_validate(missing).model_dump()["last_login_days"] is None


def test_the_range_limits_themselves_are_allowed(record: type[BaseModel]) -> None:
    record.model_validate({**VALID, "age": 18, "support_calls": 0, "last_login_days": 0.0})
    record.model_validate({**VALID, "age": 100, "support_calls": 100, "last_login_days": 3650.0})


# --- LoadedModel.validate -----------------------------------------------------------------------------


def _field(loaded: LoadedModel, records: list[Any], where: str) -> str:
    with pytest.raises(RecordError) as info:
        loaded.validate(records, where)
    assert str(info.value).startswith(info.value.field + ": ")
    return info.value.field


def test_a_single_record_error_names_features_dot_field(loaded: LoadedModel) -> None:
    assert _field(loaded, [{**VALID, "age": 7}], "features") == "features.age"
    assert _field(loaded, [{**VALID, "age": "abc"}], "features") == "features.age"
    assert _field(loaded, [{**VALID, "bonus": 1}], "features") == "features.bonus"
    missing = {k: v for k, v in VALID.items() if k != "region"}
    assert _field(loaded, [missing], "features") == "features.region"


def test_a_batch_error_names_the_record_index(loaded: LoadedModel) -> None:
    records = [VALID, {**VALID, "region": "mars"}, {**VALID, "age": 7}]
    assert _field(loaded, records, "records") == "records[1].region"  # the first bad one
    assert _field(loaded, [{**VALID, "age": 7}], "records") == "records[0].age"


def test_a_record_that_is_not_an_object_is_an_error(loaded: LoadedModel) -> None:
    assert _field(loaded, [VALID, [1, 2, 3]], "records") == "records[1]"
    assert _field(loaded, ["age=42"], "features") == "features"


def test_a_valid_batch_becomes_a_frame_with_the_declared_dtypes(
    loaded: LoadedModel, schema: DatasetSchema, spec: FeatureSpec
) -> None:
    no_login = {k: v for k, v in VALID.items() if k != "last_login_days"}
    records = [
        VALID,
        {**VALID, "last_login_days": None, "region": "west", "plan": "basic"},
        {**no_login, "income": 30_000, "age": 60.0},  # JSON numbers in their lax forms
    ]
    frame = loaded.validate(records, "records")
    assert frame.schema == pl.Schema({c: schema.polars_schema[c] for c in spec.input_columns})
    assert frame.height == 3
    assert frame["last_login_days"].to_list() == [3.5, None, None]
    assert frame["income"].to_list() == [55_000.0, 55_000.0, 30_000.0]
    assert frame["age"].to_list() == [42, 42, 60]
    assert frame["region"].to_list() == ["north", "west", "north"]


def test_a_single_valid_record_becomes_a_one_row_frame(loaded: LoadedModel) -> None:
    frame = loaded.validate([VALID], "features")
    assert frame.to_dicts() == [VALID]


# --- datetime inputs ----------------------------------------------------------------------------------

TIMED = DatasetSchema.model_validate(
    {
        "name": "rides",
        "target": "tip",
        "columns": [
            {"name": "pickup", "dtype": "datetime"},
            {"name": "dropoff", "dtype": "datetime", "required": False, "max_null_rate": 0.1},
            {"name": "tip", "dtype": "float"},
        ],
    }
)


@pytest.mark.parametrize(
    ("sent", "held"),
    [
        ("2026-03-01T23:30:00Z", "2026-03-01T23:30:00+00:00"),
        ("2026-03-01T23:30:00-02:00", "2026-03-02T01:30:00+00:00"),  # converted to UTC
        ("2026-03-01 23:30:00", "2026-03-01T23:30:00+00:00"),  # no zone: taken as UTC, as ingest takes it
        ("2026-03-01", "2026-03-01T00:00:00+00:00"),
    ],
)
def test_a_time_is_read_as_ingest_reads_it_and_held_in_utc(sent: str, held: str) -> None:
    record = record_model(TIMED, ["pickup", "dropoff"])
    dumped = record.model_validate({"pickup": sent, "dropoff": None}).model_dump()
    assert dumped["pickup"].isoformat() == held and dumped["dropoff"] is None


@pytest.mark.parametrize(("sent", "error"), [("soon", "time_parsing"), (1772400000, "time_type")])
def test_what_is_no_time_is_refused_on_its_field(sent: Any, error: str) -> None:
    record = record_model(TIMED, ["pickup"])
    assert _errors(record, {"pickup": sent}) == [("pickup", error)]


def test_times_become_a_utc_column_of_the_frame() -> None:
    record = record_model(TIMED, ["pickup", "dropoff"])
    loaded = loaded_model_stub(record=record, columns=["pickup", "dropoff"], schema=TIMED)
    frame = loaded.validate([{"pickup": "2026-03-01T23:30:00-02:00", "dropoff": None}], "records")
    assert frame.schema["pickup"] == pl.Datetime("us", "UTC")
    assert frame["pickup"].dt.hour().to_list() == [1] and frame["dropoff"].to_list() == [None]
    with pytest.raises(RecordError, match=r"^features\.pickup: 'soon' is no date and time \(e\.g\. 2026-"):
        loaded.validate([{"pickup": "soon"}], "features")
