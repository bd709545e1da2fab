"""``mesh dataset init`` and ``mesh dataset check``: what they print, write and exit with. The inference and
the checks themselves: tests/unit/test_dataset_declaration.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sklearn import datasets as sk
from typer.testing import CliRunner, Result

from shared.ops.cli import app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """The default config dir is a fresh one: nothing a test does reaches deploy/config."""
    return {"MESH_CONFIG_DIR": str(tmp_path / "config"), "COLUMNS": "200"}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "wine.csv"
    frame = sk.load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map(lambda i: f"class_{i}")
    frame.to_csv(path, index=False)
    return path


def mesh(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(app, ["dataset", *args], env=env)


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def test_the_dataset_verbs_explain_themselves(env: dict[str, str | None]) -> None:
    for verb in ([], ["init"], ["check"]):
        result = mesh(env, *verb, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, result.output
    assert "dataset" in CliRunner().invoke(app, ["--help"], env=env).output


def test_init_writes_four_files_that_check_ok(env: dict[str, str | None], sample: Path) -> None:
    config_dir = Path(str(env["MESH_CONFIG_DIR"]))
    result = mesh(env, "init", str(sample), "--name", "wine", "--target", "target")
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "task multiclass on target 'target', from 178 rows" in text
    assert "proline" in text and "feature: numeric" in text and "allowed class_0, class_1, class_2" in text
    for kind in ("datasets", "features", "models", "monitor"):
        assert (config_dir / kind / "wine.yaml").is_file()
        assert f"wrote {config_dir / kind / 'wine.yaml'}" in text

    result = mesh(env, "check", "wine")
    assert result.exit_code == 0, result.output
    assert flat(result) == f"ok: dataset wine's four files in {config_dir} agree"
    checked = json.loads(mesh(env, "check", "wine", "--json").output)
    assert checked == {"dataset": "wine", "config_dir": str(config_dir), "ok": True, "problems": []}


def test_init_json_says_what_was_inferred(env: dict[str, str | None], sample: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    result = mesh(
        env, "init", str(sample), "--name", "wine", "--target", "target", "--task", "multiclass",
        "--config-dir", str(elsewhere), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["dataset"], data["task"], data["target"], data["rows"]) == (
        "wine",
        "multiclass",
        "target",
        178,
    )
    assert data["files"] == [
        str(elsewhere / kind / "wine.yaml") for kind in ("datasets", "features", "models", "monitor")
    ]
    columns = {c["name"]: c for c in data["columns"]}
    assert columns["target"]["role"] == "target" and columns["target"]["dtype"] == "category"
    assert columns["alcohol"]["role"] == "feature: numeric" and columns["alcohol"]["dtype"] == "float"
    assert not Path(str(env["MESH_CONFIG_DIR"])).exists()


def test_init_keeps_existing_files_unless_forced(env: dict[str, str | None], sample: Path) -> None:
    args = ["init", str(sample), "--name", "wine", "--target", "target"]
    assert mesh(env, *args).exit_code == 0
    result = mesh(env, *args)
    assert result.exit_code == 1
    assert "already exist; give --force to overwrite" in flat(result)
    assert mesh(env, *args, "--force").exit_code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target", "colour"], "target column 'colour' is not in the file (its columns: alcohol,"),
        (["--target", "target", "--task", "binary"], "target column 'target' has 3 classes"),
        (["--target", "target", "--task", "regression"], "a regression task needs numbers"),
        (["--target", "target", "--id-column", "nope"], "id column 'nope' is not in the file"),
    ],
)
def test_init_refuses_a_target_it_cannot_learn_exit_1(
    args: list[str], says: str, env: dict[str, str | None], sample: Path
) -> None:
    result = mesh(env, "init", str(sample), "--name", "wine", *args)
    assert result.exit_code == 1, result.output
    assert says in flat(result)
    assert not Path(str(env["MESH_CONFIG_DIR"])).exists()


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        ("empty.csv", "", "empty.csv is empty"),
        ("data.xml", "<a/>", "cannot tell its format from the suffix '.xml'"),
        (
            "ages.csv",
            "age,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)) + "unknown,1\n",
            "column 'age'",
        ),
    ],
)
def test_init_refuses_a_bad_file_exit_1(
    file: str, content: str, says: str, env: dict[str, str | None], tmp_path: Path
) -> None:
    path = tmp_path / file
    path.write_text(content)
    result = mesh(env, "init", str(path), "--name", "bad", "--target", "y")
    assert result.exit_code == 1, result.output
    assert says in flat(result)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--name", "Wine", "--target", "target"], "'Wine' must match"),
        (["--name", "wine", "--target", "target", "--task", "ranking"], "'ranking' is not one of"),
        (["--name", "wine"], "--target"),
    ],
)
def test_init_usage_errors_exit_2(
    args: list[str], says: str, env: dict[str, str | None], sample: Path
) -> None:
    result = mesh(env, "init", str(sample), *args)
    assert result.exit_code == 2, result.output
    assert says in flat(result)


def test_init_of_a_file_that_does_not_exist_exits_2(env: dict[str, str | None], tmp_path: Path) -> None:
    result = mesh(env, "init", str(tmp_path / "gone.csv"), "--name", "x", "--target", "y")
    assert result.exit_code == 2 and "does not exist" in flat(result)


def test_check_prints_every_problem_and_exits_1(env: dict[str, str | None], sample: Path) -> None:
    config_dir = Path(str(env["MESH_CONFIG_DIR"]))
    assert mesh(env, "init", str(sample), "--name", "wine", "--target", "target").exit_code == 0
    monitor = config_dir / "monitor" / "wine.yaml"
    data = yaml.safe_load(monitor.read_text())
    data["model_name"] = "other"
    data["performance"]["metric"] = "rmse"
    monitor.write_text(yaml.safe_dump(data))

    result = mesh(env, "check", "wine")
    assert result.exit_code == 1
    text = flat(result)
    assert "2 problem(s) in dataset wine" in text
    assert (
        f"{monitor}: model_name: monitors model 'other', but models/wine.yaml names its model 'wine'" in text
    )
    assert f"{monitor}: performance.metric: 'rmse' is not a live metric of a multiclass model" in text

    result = mesh(env, "check", "wine", "--json")
    assert result.exit_code == 1
    found = json.loads(result.output)
    assert found["ok"] is False
    assert [(p["file"], p["field"]) for p in found["problems"]] == [
        (str(monitor), "model_name"),
        (str(monitor), "performance.metric"),
    ]


def test_check_of_an_undeclared_dataset_names_the_missing_files(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    result = mesh(env, "check", "nothing", "--config-dir", str(tmp_path))
    assert result.exit_code == 1
    assert flat(result).count("missing: dataset 'nothing' has no") == 4
