"""Code tests of the feature pipeline: the spec, its outputs, fitted state, and no train/serve skew.

The same declared pipeline builds the training frames (features service) and runs inside every served
model (serving, registry). The skew tests push the same raw rows through every path a row can take and
require bit-identical matrices.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from services.ingest.batches import read_batch, validate_batch
from services.serving.holder import LoadedModel
from services.serving.records import record_model
from shared.ml.datasets import DatasetSchema
from shared.ml.feature_sets import FeatureSetManifest, build_feature_set, split_mask
from shared.ml.features import (
    CHAINED_LOOKUP_KEYS,
    GLOBAL_KEY,
    FeaturePipeline,
    FeatureSpec,
    as_polars,
    check_spec_against_schema,
    load_feature_spec,
    lookup,
)
from shared.ml.snapshots import SnapshotStore
from shared.ml.steps import FeatureTransformer
from shared.ops.demo_data import generate
from tests.support.data import CONFIG_DIR, commit_snapshot

DEMO_INPUTS = [
    "age",
    "income",
    "tenure_months",
    "monthly_spend",
    "support_calls",
    "last_login_days",
    "region",
    "plan",
]


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return generate(rows=600, seed=11)


def _spec(**fields: object) -> FeatureSpec:
    return FeatureSpec.model_validate(
        {"dataset": "demo", "target": "churned", "id_column": "customer_id", **fields}
    )


# --- the spec -----------------------------------------------------------------------------------------


def test_demo_spec_loads_and_names_the_raw_columns_it_reads(spec: FeatureSpec, schema: DatasetSchema) -> None:
    check_spec_against_schema(spec, schema)  # raises if the spec and the schema disagree
    assert spec.input_columns == DEMO_INPUTS
    # Neither the label, the id nor the timestamp is an input the model would see.
    assert not {"churned", "customer_id", "event_time"} & set(spec.input_columns)
    assert set(spec.input_columns) <= set(schema.column_names)


def test_a_spec_reading_an_undeclared_column_is_refused(schema: DatasetSchema) -> None:
    bad = _spec(features=[{"name": "shoe", "op": "numeric", "source": "shoe_size"}])
    with pytest.raises(ValueError, match="shoe_size"):
        check_spec_against_schema(bad, schema)
    bad_id = _spec(id_column="account_no", features=[{"name": "age", "op": "numeric", "source": "age"}])
    with pytest.raises(ValueError, match="account_no"):
        check_spec_against_schema(bad_id, schema)


def test_one_hot_needs_declared_categories(schema: DatasetSchema) -> None:
    bad = _spec(features=[{"name": "cid", "op": "one_hot", "source": "customer_id"}])
    with pytest.raises(ValueError, match="one_hot"):
        check_spec_against_schema(bad, schema)


def test_loading_a_spec_that_uses_an_undeclared_column_fails(tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "features").mkdir()
    shutil.copy(CONFIG_DIR / "datasets" / "demo.yaml", tmp_path / "datasets" / "demo.yaml")
    text = (CONFIG_DIR / "features" / "demo.yaml").read_text()
    assert "source: support_calls}" in text
    (tmp_path / "features" / "demo.yaml").write_text(
        text.replace("source: support_calls}", "source: support_tickets}")
    )
    with pytest.raises(ValueError, match="support_tickets"):
        load_feature_spec(tmp_path, "demo")


# --- outputs ------------------------------------------------------------------------------------------


def test_output_columns_in_declared_order_with_one_hot_expanded(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    pipeline = FeaturePipeline(spec, schema).fit(raw)
    expected = [
        "age",
        "log_income",
        "log_tenure",
        "monthly_spend",
        "support_calls",
        "spend_to_income",
        "last_login_days",
        "never_logged_in",
        "spend_vs_region",
        "region=north",
        "region=south",
        "region=east",
        "region=west",
        "plan",
    ]
    assert pipeline.output_columns == expected
    assert pipeline.transform(raw).columns == expected
    assert list(FeatureTransformer(pipeline.to_dict()).get_feature_names_out()) == expected


def test_every_output_is_float64_without_nulls(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    assert raw["last_login_days"].null_count() > 0  # the case under test is present
    out = FeaturePipeline(spec, schema).fit(raw).transform(raw)
    assert out.height == raw.height
    assert all(dtype == pl.Float64 for dtype in out.dtypes), out.schema
    assert out.null_count().sum_horizontal().item() == 0
    assert np.isfinite(out.to_numpy()).all()


def test_feature_values_follow_their_declared_operations(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    out = FeaturePipeline(spec, schema).fit(raw).transform(raw)
    never = raw["last_login_days"].is_null().to_numpy()
    assert (out["last_login_days"].to_numpy()[never] == -1.0).all()
    assert (out["never_logged_in"].to_numpy() == never.astype(float)).all()
    logged = ~never
    assert np.array_equal(
        out["last_login_days"].to_numpy()[logged], raw["last_login_days"].to_numpy()[logged]
    )
    assert np.allclose(out["log_income"].to_numpy(), np.log1p(raw["income"].to_numpy()))
    assert np.allclose(out["log_tenure"].to_numpy(), np.log1p(raw["tenure_months"].to_numpy()))
    ratio = 12 * raw["monthly_spend"].to_numpy() / (raw["income"].to_numpy() + 1.0)
    assert np.allclose(out["spend_to_income"].to_numpy(), ratio)
    ranks = {"basic": 0.0, "plus": 1.0, "premium": 2.0}
    assert out["plan"].to_list() == [ranks[p] for p in raw["plan"]]
    one_hot = out.select("region=north", "region=south", "region=east", "region=west").to_numpy()
    assert (one_hot.sum(axis=1) == 1.0).all()
    assert (out["region=south"].to_numpy() == (raw["region"] == "south").to_numpy()).all()


def test_an_unknown_plan_ranks_minus_one_and_a_known_one_does_not(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    pipeline = FeaturePipeline(spec, schema).fit(raw)
    rows = raw.head(2).with_columns(plan=pl.Series(["gold", "premium"]))
    assert pipeline.transform(rows)["plan"].to_list() == [-1.0, 2.0]


@pytest.mark.parametrize("keys", [1, CHAINED_LOOKUP_KEYS, CHAINED_LOOKUP_KEYS + 1, 40])
def test_a_lookup_answers_the_same_whether_chained_or_hashed(keys: int) -> None:
    """Few keys are looked up by a chain of comparisons, many by a hash: both give table[key] or default."""
    table = {f"group {i}": i * 1.5 for i in range(keys)}
    column = pl.Series("key", [*table, "never seen", None, *reversed(table)], dtype=pl.String)
    expected = [*table.values(), -7.0, -7.0, *reversed(table.values())]

    found = pl.DataFrame({"key": column}).select(lookup(pl.col("key"), table, default=-7.0)).to_series()
    assert found.dtype == pl.Float64
    assert found.to_list() == expected


def test_group_ratio_over_many_groups_uses_each_fitted_mean(schema: DatasetSchema) -> None:
    spec = _spec(features=[{"name": "rel", "op": "group_ratio", "source": "monthly_spend", "by": "region"}])
    train = pl.DataFrame({"region": [f"r{i % 20}" for i in range(200)], "monthly_spend": range(200)})
    pipeline = FeaturePipeline(spec, schema).fit(train)

    out = pipeline.transform(train.head(20))["rel"].to_list()
    means = [pipeline.state["rel"][f"r{i}"] for i in range(20)]
    assert out == [pytest.approx(float(i) / mean) for i, mean in zip(range(20), means, strict=True)]


# --- fitted state -------------------------------------------------------------------------------------


def test_group_ratio_is_fitted_on_the_frame_given_to_fit_only(schema: DatasetSchema) -> None:
    spec = _spec(features=[{"name": "rel", "op": "group_ratio", "source": "monthly_spend", "by": "region"}])
    train = pl.DataFrame(
        {"region": ["north", "north", "south"], "monthly_spend": [10.0, 20.0, 100.0]},
    )
    holdout = pl.DataFrame({"region": ["north", "west"], "monthly_spend": [1000.0, 65.0]})
    pipeline = FeaturePipeline(spec, schema).fit(train)

    table = pipeline.state["rel"]
    assert table == {"north": 15.0, "south": 100.0, GLOBAL_KEY: pytest.approx(130.0 / 3)}
    # The holdout row's 1000 did not move the north mean; 'west' was never seen, so it uses the global one.
    out = pipeline.transform(holdout)["rel"].to_list()
    assert out == [pytest.approx(1000.0 / 15.0), pytest.approx(65.0 / (130.0 / 3))]


def test_group_ratio_in_a_feature_set_never_sees_the_holdout(
    spec: FeatureSpec, schema: DatasetSchema, tmp_path: Path
) -> None:
    store = SnapshotStore(tmp_path)
    frame = generate(rows=800, seed=12)
    manifest = build_feature_set(tmp_path, schema, spec, [commit_snapshot(store, schema, "s12", frame, 1)])
    state = json.loads(manifest.pipeline_path.read_text())["state"]["spend_vs_region"]
    train_raw = frame.filter(~split_mask(frame, spec))
    expected = dict(train_raw.group_by("region").agg(pl.col("monthly_spend").mean()).iter_rows())
    for region, mean in expected.items():
        assert state[region] == pytest.approx(mean, abs=1e-9)  # state is rounded to 9 decimals
    assert state[GLOBAL_KEY] == pytest.approx(train_raw["monthly_spend"].mean(), rel=1e-12)
    # ... and not the mean over all rows, which the holdout would have shifted.
    assert state[GLOBAL_KEY] != pytest.approx(frame["monthly_spend"].mean(), rel=1e-12)


def test_transform_before_fit_is_refused_when_state_is_needed(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    with pytest.raises(RuntimeError, match="spend_vs_region"):
        FeaturePipeline(spec, schema).transform(raw)
    stateless = _spec(features=[{"name": "age", "op": "numeric", "source": "age"}])
    assert FeaturePipeline(stateless, schema).transform(raw.head(3))["age"].to_list() == [
        float(a) for a in raw["age"].head(3)
    ]


def test_to_dict_from_dict_round_trip_transforms_identically(
    spec: FeatureSpec, schema: DatasetSchema, raw: pl.DataFrame
) -> None:
    fitted = FeaturePipeline(spec, schema).fit(raw.head(400))
    data = json.loads(json.dumps(fitted.to_dict()))  # through JSON, as pipeline.json stores it
    restored = FeaturePipeline.from_dict(data)
    assert restored.to_dict() == fitted.to_dict()
    assert restored.spec.spec_hash == spec.spec_hash
    assert restored.transform(raw).equals(fitted.transform(raw))


# --- train/serve skew ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feature_set(
    tmp_path_factory: pytest.TempPathFactory, spec: FeatureSpec, schema: DatasetSchema
) -> tuple[FeatureSetManifest, pl.DataFrame]:
    """A feature set over two snapshots, and the raw rows it was built from (in snapshot order)."""
    root = tmp_path_factory.mktemp("skew")
    store = SnapshotStore(root)
    frames = [generate(rows=700, seed=21), generate(rows=500, seed=22, covariate_shift=0.8)]
    snapshots = [commit_snapshot(store, schema, f"s{i}", f, i + 1) for i, f in enumerate(frames)]
    return build_feature_set(root, schema, spec, snapshots), pl.concat(frames)


def _shared_rows(raw: pl.DataFrame) -> pl.DataFrame:
    """Rows from both snapshots, with missing logins and every region among them."""
    rows = pl.concat([raw.head(60), raw.tail(60), raw.filter(pl.col("last_login_days").is_null()).head(20)])
    rows = rows.unique("customer_id", maintain_order=True)
    assert rows["last_login_days"].null_count() >= 10
    assert set(rows["region"]) == {"north", "south", "east", "west"}
    return rows


def _as_request(rows: pl.DataFrame, columns: list[str]) -> list[dict[str, object]]:
    """The records as a client sends them: JSON, with nulls for missing logins."""
    return json.loads(json.dumps(rows.select(columns).to_dicts()))


def test_every_serving_path_transforms_like_the_features_service(
    feature_set: tuple[FeatureSetManifest, pl.DataFrame],
) -> None:
    manifest, raw = feature_set
    rows = _shared_rows(raw)
    pipeline_dict = json.loads(manifest.pipeline_path.read_text())
    columns = FeaturePipeline.from_dict(pipeline_dict).spec.input_columns

    # Features service: the fitted pipeline on the raw polars frame.
    features_service = FeaturePipeline.from_dict(pipeline_dict).transform(rows).to_numpy()

    transformer = FeatureTransformer(pipeline_dict)
    request = _as_request(rows, columns)
    # Records as JSON dicts, straight into the served model's first step.
    from_records = transformer.transform(request)
    # What MLflow's pyfunc hands over: pandas (missing logins become NaN there).
    from_pandas = transformer.transform(rows.select(columns).to_pandas())
    # What serving does: validate the request into a typed frame, then the model's first step.
    pipeline = FeaturePipeline.from_dict(pipeline_dict)
    loaded = LoadedModel(
        name="churn-demo",
        version="1",
        run_id="run",
        feature_set_id=manifest.feature_set_id,
        snapshot_ids=manifest.snapshot_ids,
        loaded_at="",
        model=None,
        record=record_model(pipeline.schema, columns),
        columns=columns,
        schema=pipeline.schema,
    )
    from_serving = transformer.transform(loaded.validate(request, "records"))

    assert features_service.shape == (rows.height, len(pipeline.output_columns))
    assert np.isfinite(features_service).all()
    for other in (from_records, from_pandas, from_serving):
        assert other.dtype == np.float64
        assert np.allclose(other, features_service, rtol=0, atol=0, equal_nan=True)
        assert np.array_equal(other, features_service, equal_nan=True)


def test_one_record_at_a_time_transforms_like_the_batch(
    feature_set: tuple[FeatureSetManifest, pl.DataFrame],
) -> None:
    manifest, raw = feature_set
    rows = _shared_rows(raw).head(12)
    pipeline_dict = json.loads(manifest.pipeline_path.read_text())
    transformer = FeatureTransformer(pipeline_dict)
    columns = FeaturePipeline.from_dict(pipeline_dict).spec.input_columns
    batch = transformer.transform(_as_request(rows, columns))
    singles = np.vstack([transformer.transform([record]) for record in _as_request(rows, columns)])
    assert np.array_equal(singles, batch)


def test_train_parquet_holds_what_serving_computes_for_the_same_raw_rows(
    feature_set: tuple[FeatureSetManifest, pl.DataFrame], spec: FeatureSpec
) -> None:
    manifest, raw = feature_set
    pipeline_dict = json.loads(manifest.pipeline_path.read_text())
    output_columns = FeaturePipeline.from_dict(pipeline_dict).output_columns
    train = pl.read_parquet(manifest.train_path)
    # train.parquet carries no id column: its rows are the train side of the raw window, in order.
    train_raw = raw.filter(~split_mask(raw, spec))
    assert train.height == train_raw.height == manifest.train_rows
    train = train.with_columns(train_raw[spec.id_column])
    assert train[spec.target].equals(train_raw[spec.target])  # the alignment holds

    shared = _shared_rows(raw).join(train.select(spec.id_column), on=spec.id_column, how="semi")
    assert shared.height >= 50
    served = FeatureTransformer(pipeline_dict).transform(_as_request(shared, spec.input_columns))
    stored = (
        shared.select(spec.id_column)
        .join(train, on=spec.id_column, how="left", maintain_order="left")
        .select(output_columns)
        .to_numpy()
    )
    assert np.array_equal(served, stored, equal_nan=True)


def test_holdout_rows_transform_with_the_state_fitted_on_train(
    feature_set: tuple[FeatureSetManifest, pl.DataFrame],
) -> None:
    manifest, _ = feature_set
    holdout = pl.read_parquet(manifest.holdout_path)
    pipeline_dict = json.loads(manifest.pipeline_path.read_text())
    means = pipeline_dict["state"]["spend_vs_region"]
    out = FeatureTransformer(pipeline_dict).transform(holdout)
    names = FeaturePipeline.from_dict(pipeline_dict).output_columns
    column = out[:, names.index("spend_vs_region")]
    expected = holdout["monthly_spend"].to_numpy() / np.array([means[r] + 1e-9 for r in holdout["region"]])
    assert np.allclose(column, expected, rtol=1e-12)
    assert not math.isclose(means["south"], means["north"])


# --- times ---------------------------------------------------------------------------------------------

RIDES = DatasetSchema.model_validate(
    {
        "name": "rides",
        "target": "tip",
        "columns": [
            {"name": "pickup", "dtype": "datetime", "required": False, "max_null_rate": 0.5},
            {"name": "distance", "dtype": "float"},
            {"name": "tip", "dtype": "float"},
        ],
    }
)
PARTS = ["year", "quarter", "month", "day", "weekday", "day_of_year", "hour", "minute"]
RIDES_SPEC = FeatureSpec.model_validate(
    {
        "dataset": "rides",
        "target": "tip",
        "features": [
            {"name": "distance", "op": "numeric", "source": "distance"},
            *({"name": f"pickup_{p}", "op": "datetime_part", "source": "pickup", "part": p} for p in PARTS),
            {
                "name": "pickup_hour_or_none",
                "op": "datetime_part",
                "source": "pickup",
                "part": "hour",
                "fill": -1,
            },
        ],
    }
)


def test_datetime_parts_are_read_in_utc() -> None:
    """Sunday 1 March 2026, 23:30 at UTC-2, is Monday 2 March, 01:30 in UTC: the parts of that."""
    frame = as_polars(
        [{"pickup": "2026-03-01T23:30:00-02:00", "distance": 1.0}, {"pickup": None, "distance": 2.0}],
        RIDES_SPEC.input_columns,
        RIDES,
    )
    row = FeaturePipeline(RIDES_SPEC, RIDES).transform(frame).to_dicts()
    expected = {"year": 2026, "quarter": 1, "month": 3, "day": 2, "weekday": 1, "day_of_year": 61, "hour": 1,
                "minute": 30}  # fmt: skip
    assert {p: row[0][f"pickup_{p}"] for p in PARTS} == expected
    assert row[0]["pickup_hour_or_none"] == 1.0
    assert all(row[1][f"pickup_{p}"] is None for p in PARTS) and row[1]["pickup_hour_or_none"] == -1.0


def test_a_datetime_part_needs_a_datetime_column() -> None:
    spec = FeatureSpec.model_validate(
        {
            "dataset": "rides",
            "target": "tip",
            "features": [{"name": "d", "op": "datetime_part", "source": "distance", "part": "hour"}],
        }
    )
    with pytest.raises(ValueError, match="datetime_part needs a datetime column; 'distance' is not"):
        check_spec_against_schema(spec, RIDES)


def test_every_path_a_time_takes_gives_the_same_parts() -> None:
    """A file's times as ingest stores them (UTC), the same times as JSON records, as MLflow's pyfunc
    hands them over (pandas, zone-aware) and as serving validates a request: one matrix."""
    times = ["2026-03-01T23:30:00-02:00", "2026-06-30T12:05:00+05:30", "2026-12-31T23:59:59Z", None]
    csv = "pickup,distance,tip\n" + "".join(f"{t or ''},{i}.5,1.0\n" for i, t in enumerate(times))
    stored, failures = validate_batch(read_batch(csv.encode(), "csv", "rides"), RIDES)
    assert failures == []
    pipeline = FeaturePipeline(RIDES_SPEC, RIDES)
    columns = RIDES_SPEC.input_columns
    features_service = pipeline.transform(stored).to_numpy()

    transformer = FeatureTransformer(pipeline.to_dict())
    records = [{"pickup": t, "distance": i + 0.5} for i, t in enumerate(times)]
    aware = pd.DataFrame({"pickup": pd.to_datetime(times, utc=True).tz_convert("Asia/Tokyo"),
                          "distance": [i + 0.5 for i in range(len(times))]})  # fmt: skip
    loaded = LoadedModel(
        name="rides", version="1", run_id="run", feature_set_id="fs", snapshot_ids=[], loaded_at="",
        model=None, record=record_model(RIDES, columns), columns=columns, schema=RIDES,
    )  # fmt: skip
    for other in (
        transformer.transform(records),
        transformer.transform(aware),
        transformer.transform(loaded.validate(records, "records")),
    ):
        assert np.array_equal(other, features_service, equal_nan=True)
