"""The registry's HTTP contract: a model's aliases, the promote command's body, and what a command
answers. Shown in its OpenAPI (``/openapi.json``, ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from shared.events import ModelPromoted

DESCRIPTION = """\
The registry gates every trained candidate against the champion (on `model.trained`) and keeps the
`champion` and `previous` aliases of each model in MLflow. Over HTTP it tells which versions they point at,
and takes two commands: promote a version, or roll back to the previous one. Every move is announced on
`model.promoted`, and serving follows it.

Commands need the bearer token `MESH_REGISTRY_TOKEN` (the local stack keeps one in
`.mesh/registry-token`): 401 without it or with a wrong one, 403 while no token is configured.
Refusals are `{"error": ..., "field": ...}`, naming what to fix.
"""


class AliasInfo(BaseModel):
    """The model version an alias points at."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    version: str = Field(examples=["2"])
    run_id: str | None = Field(description="the MLflow run that trained it")
    tags: dict[str, str] = Field(description="its registry tags: feature set, snapshots, holdout metrics")


class ModelAliases(BaseModel):
    """Which versions of a model serve (``champion``) and came before (``previous``); null where unset."""

    model_name: str
    champion: AliasInfo | None
    previous: AliasInfo | None


# MLflow keeps version numbers as 64-bit integers: a longer one made its server fail (500), and its client
# retry for minutes, holding the model's lock, before the command could answer 404.
MAX_VERSION_DIGITS = 18


def _version_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("version_number", 'a version number such as "2" is required')
    text = str(value)
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_VERSION_DIGITS):
        raise PydanticCustomError(
            "version_number",
            'a version number such as "2" is required (at most {digits} digits)',
            {"digits": MAX_VERSION_DIGITS},
        )
    return text


VersionNumber = Annotated[
    str,
    BeforeValidator(_version_number),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": f"^[0-9]{{1,{MAX_VERSION_DIGITS}}}$"},
                {"type": "integer", "minimum": 0, "maximum": 10**MAX_VERSION_DIGITS - 1},
            ],
            "description": "the model version to make champion: its number, as a string or an integer",
            "examples": ["2"],
        }
    ),
]


class PromoteRequest(BaseModel):
    """``{"version": "2"}``: that version becomes the champion."""

    version: VersionNumber


class ChampionMoved(ModelPromoted):
    """The ``model.promoted`` announcement of the move, and the id of its event."""

    event_id: str = Field(description="the id of the `model.promoted` event announcing the move")
