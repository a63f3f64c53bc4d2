"""Base classes and shared types of the wire models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, WithJsonSchema

Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A JSON number that keeps an integer an integer on the wire (`1`, not `1.0`)."""

JsonObject = dict[str, Any]
"""Any JSON object (event data, results, free-form settings)."""


class Strict(BaseModel):
    """A request body that refuses unknown fields (a 400 naming the field) and values of
    another JSON type (`"8"` is not 8, `true` is not 1), as OpenAI's API does."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Wire(BaseModel):
    """A response object: every key the store writes is declared, so the schema is the
    whole object (an undeclared key fails the response in tests, not silently)."""

    model_config = ConfigDict(extra="forbid")


def not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without the `null` branch of an optional (`str | None`): a query, header,
    path or form parameter cannot be JSON null; an optional one is simply absent."""
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        kept = [option for option in options if option != {"type": "null"}]
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
    return schema
