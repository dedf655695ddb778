"""Generates the Python gRPC stubs for proto/triptych/v1/*.proto into triptych/v1/ (`make proto`)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILES = ("triptych/v1/triptych.proto",)


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the generated files under out_dir."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main([*args, *(str(PROTO_ROOT / f) for f in PROTO_FILES)]) != 0:
        raise RuntimeError("protoc failed; see its output above")
    return sorted(out_dir.glob("triptych/v1/*_pb2*.py"))


if __name__ == "__main__":
    for path in generate():
        print(f"wrote {path.relative_to(REPO_ROOT)}", file=sys.stderr)
