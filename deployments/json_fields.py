"""Typed reads of fields from a parsed JSON body; every failure is a RequestError naming the field."""

from __future__ import annotations

from typing import Any

from triptych.errors import RequestError


def number_field(value: Any, field: str, kind: type, default: Any) -> Any:
    """`value` as int or float (`kind`), or `default` when absent (None)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"must be a number, got {type(value).__name__}")
    if kind is int and not float(value).is_integer():
        raise RequestError(field, "must be an integer")
    return kind(value)


def string_field(value: Any, field: str, default: str | None) -> str:
    """`value` as a string, or `default` when absent (None) and a default exists."""
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise RequestError(field, "must be a string")
    return value
