"""benchmarks.monolith, the disaggregation benchmark's baseline: one replica that holds every model answers
chat (streamed and not) and text-to-image over the same OpenAI HTTP API as Triptych, with Triptych's own
answers (the same tiny models: greedy chat text and usage equal, the same image for the same seed), uses
the embedding cache, and refuses a bad request with a 400 naming the field.

Deployed as a second application (route prefix ``/monolith``) beside the session's shared Triptych, on the
same Serve, and deleted at the end of the module.
"""

import base64
import io

import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from benchmarks.monolith import APP_NAME, app_builder
from tests.serving import image_bytes, user_message

IMAGE = image_bytes((30, 160, 220))
QUESTION = "what colour is the picture?"


@pytest.fixture(scope="module")
def monolith(server):
    from ray import serve

    args = {**server.config.model_dump(mode="json"),
            "ingress": {"num_cpus": 0.1, "max_ongoing_requests": 8, "max_queued_requests": 8}}
    serve.run(app_builder(args), name=APP_NAME, route_prefix="/monolith")
    try:
        yield f"{server.http_url}/monolith"
    finally:
        serve.delete(APP_NAME)


def _client(base_url: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client: OpenAI, **extra):
    return client.chat.completions.create(model="", messages=[user_message(QUESTION, IMAGE)], max_tokens=8,
                                          temperature=0.0, **extra)


def test_chat_answers_as_triptych_does_streamed_or_not_and_uses_the_cache(monolith, openai_client):
    expected = _chat(openai_client)
    reply = _chat(_client(monolith))
    assert reply.choices[0].message.content == expected.choices[0].message.content
    ours, theirs = reply.usage.model_dump(), expected.usage.model_dump()
    for field in ("prompt_tokens", "completion_tokens", "visual_tokens_in", "visual_tokens_kept"):
        assert ours[field] == theirs[field], field
    chunks = list(_chat(_client(monolith), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == theirs["completion_tokens"]
    assert chunks[-1].usage.model_extra["cache_hit"] is True  # the first monolith request cached the image
    from ray import serve

    stats = serve.get_deployment_handle("Monolith", app_name=APP_NAME).stats.remote().result()
    assert stats["images_encoded"] == 1


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def test_text_to_image_gives_triptychs_image_for_the_same_seed(monolith, openai_client):
    request = {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json",
               "extra_body": {"steps": 2, "seed": 7}}
    expected = openai_client.images.generate(**request).data[0]
    image = _client(monolith).images.generate(**request).data[0]
    assert image.model_extra["seed"] == 7
    difference = np.abs(_pixels(image.b64_json) - _pixels(expected.b64_json))  # (64, 64, 3)
    assert difference.max() <= 1  # one engine, one seed: at most a rounding step apart


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [user_message("hi")], "max_tokens": -1}, "max_tokens"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/images/generations", {"prompt": "a red circle", "size": "big"}, "size"),
])
def test_a_bad_request_is_a_400_naming_the_field(monolith, path, body, param):
    response = httpx.post(f"{monolith}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(f"{monolith}/healthz", timeout=30).json() == {"status": "ok"}  # still serving
