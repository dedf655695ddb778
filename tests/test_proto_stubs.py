"""The committed gRPC stubs match the .proto, and no repo package shadows a dependency."""

import importlib.util
from pathlib import Path

import pytest

from triptych import protogen

REPO = Path(__file__).resolve().parent.parent


def test_committed_stubs_are_fresh(tmp_path):
    generated = protogen.generate(tmp_path)
    assert [p.name for p in generated] == ["triptych_pb2.py", "triptych_pb2_grpc.py"]
    for path in generated:
        committed = REPO / "triptych" / "v1" / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make proto`"


@pytest.mark.parametrize("name", ["proto", "grpc", "redis", "ray"])
def test_no_repo_package_shadows_a_dependency(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    locations = [Path(p).resolve() for p in (spec.submodule_search_locations or [spec.origin])]
    assert all(REPO not in loc.parents or ".venv" in loc.parts for loc in locations), locations


def test_service_has_public_methods():
    from triptych.v1 import triptych_pb2

    methods = {m.name for m in triptych_pb2.DESCRIPTOR.services_by_name["Triptych"].methods}
    assert methods == {"Chat", "GenerateImage", "Embed", "RunWorkflow"}
