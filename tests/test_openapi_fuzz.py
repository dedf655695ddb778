"""The live `/openapi.json`, fuzzed by schemathesis (bounded, derandomized, loopback): no 5xx, every
error in the one error shape, the server still serving after it all; and the spec itself typed."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_dict(httpx.get(f"{server.http_url}/openapi.json").json())


def test_the_spec_describes_bodies_and_the_error_shape(server):
    spec = httpx.get(f"{server.http_url}/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"}
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}
    request = spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"pruning_method", "visual_token_keep_ratio", "stream_options"} <= set(request)  # extension fields
    images = spec["components"]["schemas"]["ImageGenerationRequest"]["properties"]
    assert {"steps", "sampler", "seed", "negative_prompt", "cache_interval", "stream"} <= set(images)
    assert "/v1/workflows/{name}" in spec["paths"] and "/v1/embeddings" in spec["paths"]
    assert set(spec["components"]["schemas"]["ErrorDetail"]["properties"]) == ERROR_KEYS


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzed_requests_never_fail_the_server(api_schema, server, mode):
    """Every operation of the spec, bodies generated from it (valid ones, then invalid ones): each
    answer is < 500 and every error is in the one shape. (schemathesis' pytest plugin does not load
    with pytest 9 here, so its strategies drive hypothesis directly.)"""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    if mode is GenerationMode.NEGATIVE:  # an operation without a body has no invalid request to make
        operations = [op for op in operations if op.method.upper() == "POST"]
        assert len(operations) >= 4
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call(base_url=server.http_url, timeout=120)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == ERROR_KEYS and isinstance(error["message"], str) and error["message"]

        fuzz()


def test_still_serving_after_the_fuzzing(openai_client):
    answer = openai_client.chat.completions.create(
        model="", max_tokens=2, messages=[{"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content is not None
