"""The value types of workflow inputs, step inputs/outputs and workflow outputs.

Written as strings in YAML and op signatures: scalars ``text`` (str), ``image`` (image file bytes),
``int``, ``float``, ``bool``, ``embedding`` (a (D,) L2-normalised tensor); ``list[T]``; unions
``text | image``; internal types the built-ins need (``chat_request``, ``image_request``: the parsed
requests of the chat and images APIs; ``vision_features``, ``text_embedding``: stage tensors), which
only the ingress can supply; and the type variable ``T`` in op signatures (``select`` returns the
item type of the list it was given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipelines.chat_request import ChatRequest
from pipelines.image_request import ImageRequest
from triptych.types import VisionFeatures

SCALARS = ("text", "image", "int", "float", "bool", "embedding")
INTERNAL = ("chat_request", "image_request", "vision_features", "text_embedding")
TYPE_VARIABLE = "T"


@dataclass(frozen=True)
class ValueType:
    """A scalar (``args`` empty), ``list`` (one arg), ``union`` (two or more args) or the variable ``T``."""

    name: str
    args: tuple[ValueType, ...] = ()

    def __str__(self) -> str:
        if self.name == "list":
            return f"list[{self.args[0]}]"
        if self.name == "union":
            return " | ".join(str(a) for a in self.args)
        return self.name

    @property
    def internal(self) -> bool:
        """True when only server code can make a value of this type (not a client over JSON/proto)."""
        return self.name in INTERNAL or any(a.internal for a in self.args)

    def options(self) -> tuple[ValueType, ...]:
        """The members of a union; a non-union type is its only member."""
        return self.args if self.name == "union" else (self,)


NEVER = ValueType("union", ())  # an input whose declared type is invalid: fits everywhere, so one
# mistake is reported once (the workflow is rejected anyway)


def list_of(item: ValueType) -> ValueType:
    return ValueType("list", (item,))


class TypeParseError(ValueError):
    """A type string is not in the grammar; the message says what is allowed."""


def parse_type(text: Any) -> ValueType:
    """``"list[image]"`` -> ValueType; raises TypeParseError naming what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise TypeParseError(f"a type must be a string such as 'text' or 'list[image]', got {text!r}")
    members = [m.strip() for m in _split_union(text)]
    if len(members) > 1:
        return ValueType("union", tuple(_parse_one(m, text) for m in members))
    return _parse_one(members[0], text)


def _split_union(text: str) -> list[str]:
    """``"text | list[a | b]"`` -> ``["text ", " list[a | b]"]``: split on ``|`` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _parse_one(text: str, whole: str) -> ValueType:
    if text.startswith("list[") and text.endswith("]"):
        return list_of(parse_type(text[5:-1]))
    if text in SCALARS or text in INTERNAL or text == TYPE_VARIABLE:
        return ValueType(text)
    allowed = ", ".join((*SCALARS, "list[T]", "A | B"))
    raise TypeParseError(f"unknown type {whole!r}; allowed: {allowed}")


def assignable(source: ValueType, target: ValueType) -> bool:
    """Can a value of type ``source`` go where ``target`` is expected? (``int`` fits ``float``.)"""
    if source.name == "union":
        return all(assignable(option, target) for option in source.args)
    if target.name == "union":
        return any(assignable(source, option) for option in target.args)
    if source.name == "list" or target.name == "list":
        return source.name == target.name and assignable(source.args[0], target.args[0])
    return source == target or (source.name == "int" and target.name == "float")


def bind(pattern: ValueType, actual: ValueType, bindings: dict[str, ValueType]) -> bool:
    """Match ``actual`` against ``pattern`` (which may contain ``T``), recording ``T`` in ``bindings``."""
    if pattern.name == TYPE_VARIABLE:
        bound = bindings.setdefault(TYPE_VARIABLE, actual)
        return bound == actual
    if pattern.name == "list" and actual.name == "list":
        return bind(pattern.args[0], actual.args[0], bindings)
    return assignable(actual, pattern)


def substitute(pattern: ValueType, bindings: dict[str, ValueType]) -> ValueType | None:
    """``pattern`` with ``T`` replaced; None when ``T`` is unbound."""
    if pattern.name == TYPE_VARIABLE:
        return bindings.get(TYPE_VARIABLE)
    if pattern.args:
        args = [substitute(a, bindings) for a in pattern.args]
        return None if any(a is None for a in args) else ValueType(pattern.name, tuple(args))
    return pattern


def has_variable(value_type: ValueType) -> bool:
    return value_type.name == TYPE_VARIABLE or any(has_variable(a) for a in value_type.args)


def type_of_literal(value: Any) -> ValueType | None:
    """The type of a YAML literal (str, int, float, bool or a list of one of them); None otherwise."""
    if isinstance(value, bool):
        return ValueType("bool")
    if isinstance(value, int):
        return ValueType("int")
    if isinstance(value, float):
        return ValueType("float")
    if isinstance(value, str):
        return ValueType("text")
    if isinstance(value, list) and value:
        items = {type_of_literal(v) for v in value}
        if len(items) == 1 and None not in items:
            return list_of(items.pop())
    return None


def conforms(value: Any, value_type: ValueType) -> bool:
    """Does a Python value have this type? Images are bytes; embeddings tensors; lists lists or tuples
    (a ``list[embedding]`` may also be one (N, D) tensor)."""
    name = value_type.name
    if name == "union":
        return any(conforms(value, option) for option in value_type.args)
    if name == "list":
        item = value_type.args[0]
        if item.name == "embedding" and isinstance(value, torch.Tensor):
            return value.dim() == 2
        return isinstance(value, list | tuple) and all(conforms(v, item) for v in value)
    if name == "text":
        return isinstance(value, str)
    if name == "image":
        return isinstance(value, bytes | bytearray)
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "embedding":
        return isinstance(value, torch.Tensor) and value.dim() == 1
    return isinstance(value, _INTERNAL_CLASSES[name])


_INTERNAL_CLASSES = {"chat_request": ChatRequest, "image_request": ImageRequest,
                     "vision_features": VisionFeatures, "text_embedding": torch.Tensor}  # fmt: skip
