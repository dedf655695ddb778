"""Workflow values at the edge: JSON / proto request inputs -> Python values of the declared types,
and outputs -> JSON / proto.

Python values are what the executor checks (`pipelines.workflow.types.conforms`): text `str`, image
file `bytes`, `int`, `float`, `bool`, embedding `(D,)` tensor, lists. Over HTTP an image is a
`data:image/...;base64,` URL going in and a base64 PNG string coming out; over gRPC it is bytes both
ways. A `text | image` input takes a data URL as an image and any other string as text. Every
failure is a `RequestError` naming the input (`inputs.images[2]`).
"""

from __future__ import annotations

import base64
from typing import Any

import torch

from encoders.data_url import decode_image_url
from pipelines.workflow.spec import InputSpec, Workflow
from pipelines.workflow.types import ValueType
from triptych.config import Limits
from triptych.errors import RequestError
from triptych.v1 import triptych_pb2 as pb

_KINDS = {"int": int, "float": float, "bool": bool}
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "a boolean"}


def declared_input(workflow: Workflow, name: str) -> InputSpec:
    """The spec of a request input; an undeclared name is a RequestError listing the inputs."""
    spec = workflow.input(name)
    if spec is None:
        allowed = ", ".join(s.name for s in workflow.inputs) or "none"
        raise RequestError(f"inputs.{name}", f"is not an input of workflow {workflow.name!r} (inputs: {allowed})")
    return spec


def value_from_json(raw: Any, value_type: ValueType, field: str, limits: Limits) -> Any:
    """A JSON value as a Python value of `value_type`; raises RequestError(field, ...)."""
    name = value_type.name
    if value_type.internal:
        raise RequestError(field, f"is of type {value_type}, which only the server's own endpoints can supply")
    if name == "union":
        return value_from_json(raw, _union_member(raw, value_type, field), field, limits)
    if name == "list":
        if not isinstance(raw, list):
            raise RequestError(field, f"must be a list ({value_type}), got {_json_name(raw)}")
        return [value_from_json(item, value_type.args[0], f"{field}[{i}]", limits) for i, item in enumerate(raw)]
    if name == "image":
        return decode_image_url(raw, field, limits.max_image_bytes)
    if name == "text":
        if not isinstance(raw, str):
            raise RequestError(field, f"must be a string, got {_json_name(raw)}")
        return raw
    if name == "embedding":
        if not isinstance(raw, list) or not raw or not all(_is_number(v) for v in raw):
            raise RequestError(field, "must be a non-empty list of numbers (an embedding vector)")
        return torch.tensor(raw, dtype=torch.float32)  # (D,)
    return _scalar(raw, name, field)


def value_from_proto(message: pb.WorkflowValue, value_type: ValueType, field: str) -> Any:
    """A WorkflowValue proto as a Python value of `value_type`; raises RequestError(field, ...)."""
    kind = message.WhichOneof("value")
    if value_type.internal:
        raise RequestError(field, f"is of type {value_type}, which only the server's own methods can supply")
    if value_type.name == "union":
        members = {member.name: member for member in value_type.options()}
        chosen = members.get({"image": "image", "text": "text"}.get(kind, ""))
        return value_from_proto(message, chosen or value_type.options()[0], field)
    if value_type.name == "list":
        if kind != "list":
            raise RequestError(field, f"must be a list ({value_type}), got {kind or 'nothing'}")
        return [value_from_proto(item, value_type.args[0], f"{field}[{i}]")
                for i, item in enumerate(message.list.items)]  # fmt: skip
    if value_type.name == "embedding":
        if kind != "list" or not all(item.WhichOneof("value") in ("float_value", "int_value")
                                     for item in message.list.items):  # fmt: skip
            raise RequestError(field, "must be a list of numbers (an embedding vector)")
        return torch.tensor([_number(item) for item in message.list.items], dtype=torch.float32)  # (D,)
    expected = {"text": "text", "image": "image", "int": "int_value", "float": "float_value",
                "bool": "bool_value"}[value_type.name]  # fmt: skip
    if kind == expected or (value_type.name == "float" and kind == "int_value"):
        value = getattr(message, kind)
        return float(value) if value_type.name == "float" else value
    raise RequestError(field, f"must be {value_type}, got {kind or 'nothing'}")


def value_to_json(value: Any) -> Any:
    """An output as JSON: images as base64 PNG strings, tensors as (nested) lists of floats."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [value_to_json(item) for item in value]
    return value


def value_to_proto(value: Any) -> pb.WorkflowValue:
    if isinstance(value, bytes | bytearray):
        return pb.WorkflowValue(image=bytes(value))
    if isinstance(value, bool):
        return pb.WorkflowValue(bool_value=value)
    if isinstance(value, int):
        return pb.WorkflowValue(int_value=value)
    if isinstance(value, float):
        return pb.WorkflowValue(float_value=value)
    if isinstance(value, str):
        return pb.WorkflowValue(text=value)
    if isinstance(value, torch.Tensor):
        return value_to_proto(value.tolist())
    if isinstance(value, list | tuple):
        return pb.WorkflowValue(list=pb.WorkflowList(items=[value_to_proto(item) for item in value]))
    raise TypeError(f"no WorkflowValue for {type(value).__name__}")


def _union_member(raw: Any, value_type: ValueType, field: str) -> ValueType:
    """Which member of a union a JSON value is: a data URL string is an image, other strings text."""
    members = {member.name: member for member in value_type.options()}
    if isinstance(raw, str) and "image" in members and (raw[:5].lower() == "data:" or "text" not in members):
        return members["image"]
    if isinstance(raw, str) and "text" in members:
        return members["text"]
    for member in value_type.options():
        if member.name in _KINDS and _is_kind(raw, member.name):
            return member
        if member.name == "list" and isinstance(raw, list):
            return member
    raise RequestError(field, f"must be {value_type}, got {_json_name(raw)}")


def _scalar(raw: Any, name: str, field: str) -> Any:
    if not _is_kind(raw, name):
        raise RequestError(field, f"must be {_EXPECTED[name]}, got {_json_name(raw)}")
    return _KINDS[name](raw)


def _is_kind(raw: Any, name: str) -> bool:
    if name == "bool":
        return isinstance(raw, bool)
    if not _is_number(raw):
        return False
    return name == "float" or float(raw).is_integer()


def _is_number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def _number(item: pb.WorkflowValue) -> float:
    return float(getattr(item, item.WhichOneof("value")))


def _json_name(raw: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(raw), "a number")
