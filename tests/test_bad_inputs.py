"""The bad-input corpus (tests/bad_inputs.py) through Serve, over HTTP and over gRPC, on the session
`server` (default limits): every case gets its status and names its field, in OpenAI's error shape over
HTTP, and after every case the server still answers (`/v1/models` and gRPC health); the module ends with
a chat and an image on each API. The README's bad-input table is printed from the same cases."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest

from tests import raw_http
from tests.bad_inputs import CASES, CHAT, IMAGES, LIMITS, README_BEGIN, Case, markdown_table, readme_block
from triptych.v1 import triptych_pb2 as pb

HTTP_CASES = [c for c in CASES if c.status is not None]
GRPC_CASES = [c for c in CASES if c.code is not None]
ENDPOINTS = {"chat": CHAT, "images": IMAGES}


def case_id(case: Case) -> str:
    return f"{case.api}: {case.what}"[:90]


def still_serving(server, grpc_client) -> None:
    assert httpx.get(f"{server.http_url}/v1/models", timeout=30).status_code == 200
    assert grpc_client.health() == "SERVING"


def send_http(server, case: Case):
    port = int(server.http_url.rsplit(":", 1)[1])
    path = case.path or ENDPOINTS[case.api]
    json_type = {"Content-Type": "application/json"}
    if case.raw == "content-length":  # the length says one byte too many; 1 KiB of the body is all we send
        return raw_http.post(port, path, {**json_type, "Content-Length": str(LIMITS.max_request_bytes + 1)},
                             [b"{" + b" " * 1023])
    if case.raw == "chunked":  # max + 1 bytes in chunks, and the body never ends
        return raw_http.post(port, path, {**json_type, "Transfer-Encoding": "chunked"},
                             raw_http.chunked(LIMITS.max_request_bytes + 1, chunk=2**20))
    body = case.http() if case.http else None
    content = body if isinstance(body, bytes) else None
    return httpx.request(case.method, f"{server.http_url}{path}", content=content,
                         json=None if content is not None else body, headers=json_type, timeout=120)


@pytest.mark.parametrize("case", HTTP_CASES, ids=case_id)
def test_http(server, grpc_client, case):
    response = send_http(server, case)
    status = response.status if isinstance(response, raw_http.RawResponse) else response.status_code
    assert status == case.status, response.json() if status != 200 else status
    if case.status >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["type"] == "invalid_request_error" and error["param"] == case.param
    still_serving(server, grpc_client)


@pytest.mark.parametrize("case", GRPC_CASES, ids=case_id)
def test_grpc(server, grpc_client, case):
    request = case.grpc()
    call = grpc_client.chat_request if isinstance(request, pb.ChatRequest) else grpc_client.generate_image
    if case.code == "OK":
        last = list(call(request))[-1]
        assert last.finish_reason in ("stop", "length") if case.api == "chat" else last.HasField("result")
    else:
        with pytest.raises(grpc.RpcError) as info:
            list(call(request))
        assert info.value.code().name == case.code, info.value.details()
        if case.field:
            assert info.value.details().startswith(f"{case.field}: "), info.value.details()
    still_serving(server, grpc_client)


def test_every_case_runs_on_some_api_and_says_why_not_on_the_other():
    for case in CASES:
        assert case.status is not None and bool(case.why) == (case.code is None), case.what
    table = markdown_table()
    assert table.count("\n") == len(CASES) + 1 and all(case.what in table for case in CASES)


def test_the_readme_carries_the_current_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert README_BEGIN in readme, "README.md has no bad-input table: paste the block `python -m tests.bad_inputs` prints"
    assert readme_block() in readme, "README.md's bad-input table is stale: paste `python -m tests.bad_inputs` again"


def test_chat_and_images_are_served_on_both_apis_after_the_corpus(server, openai_client, grpc_client):
    reply = openai_client.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert openai_client.images.generate(prompt="a dot", size="16x16", extra_body={"steps": 1}).data[0].b64_json
    last = list(grpc_client.chat("hi", [], max_tokens=2))[-1]
    assert last.finish_reason in ("stop", "length")
    events = list(grpc_client.generate_image(pb.GenerateImageRequest(prompt="a dot", steps=1, width=16, height=16)))
    assert events[-1].HasField("result")
