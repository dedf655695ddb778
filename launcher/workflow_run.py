"""`triptych workflow NAME --input key=value ...`: run a workflow on a server over gRPC, show its steps.

An input flag is `key=@file.png` (an image), `key=@a.png,@b.png` (a list of images), a JSON value
(`n=4`, `scores=[0.1, 0.2]`, `flag=true`) or else plain text (`prompt=a red circle`). Image outputs
are written next to `--output-dir` as `<output>.png` (`<output>-<i>.png` for lists); others printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from triptych.v1 import triptych_pb2 as pb


class InputFlagError(ValueError):
    """A malformed --input flag; the message names it."""


def input_value(flag: str, read_file) -> tuple[str, pb.WorkflowValue]:
    """`key=value` -> (key, WorkflowValue). `read_file(path, flag) -> bytes` reads images."""
    key, sep, value = flag.partition("=")
    if not sep or not key:
        raise InputFlagError(f"--input {flag!r}: expected KEY=VALUE (KEY=@file.png for an image)")
    if value.startswith("@"):
        images = [pb.WorkflowValue(image=read_file(Path(part[1:]), f"--input {key}"))
                  for part in value.split(",")]  # fmt: skip
        if "," not in value:
            return key, images[0]
        return key, pb.WorkflowValue(list=pb.WorkflowList(items=images))
    try:
        parsed = json.loads(value)
    except ValueError:
        return key, pb.WorkflowValue(text=value)
    return key, _json_value(parsed, value)


def _json_value(parsed, text: str) -> pb.WorkflowValue:
    if isinstance(parsed, bool):
        return pb.WorkflowValue(bool_value=parsed)
    if isinstance(parsed, int):
        return pb.WorkflowValue(int_value=parsed)
    if isinstance(parsed, float):
        return pb.WorkflowValue(float_value=parsed)
    if isinstance(parsed, list):
        return pb.WorkflowValue(list=pb.WorkflowList(items=[_json_value(item, json.dumps(item)) for item in parsed]))
    return pb.WorkflowValue(text=parsed if isinstance(parsed, str) else text)


def output_lines(outputs, output_dir: Path, write_file) -> list[str]:
    """One line per output; images written as PNG files under `output_dir`."""
    lines = []
    for name, value in sorted(outputs.items()):
        if value.WhichOneof("value") == "image":
            path = output_dir / f"{name}.png"
            write_file(path, value.image, "--output-dir")
            lines.append(f"{name}: wrote {path}")
        elif value.WhichOneof("value") == "list" and any(i.WhichOneof("value") == "image" for i in value.list.items):
            paths = []
            for index, item in enumerate(value.list.items):
                paths.append(output_dir / f"{name}-{index}.png")
                write_file(paths[-1], item.image, "--output-dir")
            lines.append(f"{name}: wrote {', '.join(map(str, paths))}")
        else:
            lines.append(f"{name}: {json.dumps(_plain(value))}")
    return lines


def _plain(value: pb.WorkflowValue):
    kind = value.WhichOneof("value")
    if kind == "list":
        return [_plain(item) for item in value.list.items]
    return getattr(value, kind) if kind else None
