"""Reading a configuration file: every problem named by file and field, never a bare traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


class InvalidConfig(ValueError):
    """One or more problems of a configuration, each naming its file and field."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def problems_of(error: ValidationError, file: str) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(file, field, message))
    return problems


def read_config(path: Path, model: type[M]) -> M:
    """``path`` (YAML) as ``model``, or InvalidConfig naming the file and every bad field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidConfig([ConfigProblem(str(path), "", f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise InvalidConfig([ConfigProblem(str(path), "", "must be a mapping of fields")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidConfig(problems_of(exc, str(path))) from None
