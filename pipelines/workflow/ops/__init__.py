"""The operations a workflow step can call, registered by name (one file each)."""

from __future__ import annotations

from pipelines.workflow.ops import chat, embed, encode_image, encode_text, generate, score, select
from pipelines.workflow.ops.context import OpContext
from pipelines.workflow.ops.operation import Operation, OpOutput, Param

OPS: dict[str, Operation] = {
    module.OP.name: module.OP for module in (encode_image, encode_text, chat, generate, embed, score, select)
}

__all__ = ["OPS", "OpContext", "OpOutput", "Operation", "Param"]
