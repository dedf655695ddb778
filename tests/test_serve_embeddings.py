"""Joint image-text embeddings through Serve (the session `server`, tiny profile): the official `openai`
client (float and base64), typed image items, the cache between requests, gRPC Embed, the CLI, and bad
inputs on both APIs (400 / INVALID_ARGUMENT naming the field) with the server still serving."""

from __future__ import annotations

import base64
import json

import grpc
import httpx
import numpy as np
import pytest

from encoders.clip_embedder import ClipEmbedder
from launcher.cli import main
from tests.serving import data_url, image_bytes
from triptych.v1 import triptych_pb2 as pb
from triptych.v1 import triptych_pb2_grpc as pb_grpc

TEXTS = ["a red circle", "a blue square", "three green triangles"]


@pytest.fixture(scope="module")
def model(server) -> str:
    return server.embedding_model_path.name


@pytest.fixture(scope="module")
def engine(server) -> ClipEmbedder:
    """The same checkpoint in this process: what the server's vectors must equal."""
    return ClipEmbedder.from_dir(server.embedding_model_path)


def embedder_stats(server) -> dict:
    return server.deployment_handle("Embedder").stats.remote().result()


def post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/embeddings", json=body, timeout=60)


def test_models_lists_the_embedding_model(openai_client, model):
    assert model in [m.id for m in openai_client.models.list()]


def test_openai_client_float_and_base64_equal_the_engine(openai_client, engine, model):
    floats = openai_client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    default = openai_client.embeddings.create(model=model, input=TEXTS)  # the client asks for base64
    assert [d.index for d in floats.data] == [0, 1, 2] and floats.model == model
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)  # (3, D)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], dtype=np.float32), got)
    np.testing.assert_allclose(got, engine.embed_texts(TEXTS).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(engine.count_tokens(TEXTS))
    one = openai_client.embeddings.create(model=model, input="a red circle", dimensions=engine.info().dimensions)
    np.testing.assert_array_equal(np.array(one.data[0].embedding, dtype=np.float32), got[0])


def test_base64_is_little_endian_float32(server, engine, model):
    body = post(server, {"model": model, "input": ["a red circle"], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, engine.embed_texts(["a red circle"])[0].numpy(), rtol=0, atol=1e-5)


def test_typed_items_mix_texts_and_images_and_repeat_from_the_cache(server, openai_client, engine, model):
    red, blue = image_bytes((210, 10, 10), size=(40, 40)), image_bytes((10, 10, 210), size=(40, 40))
    items = [{"type": "image_url", "image_url": {"url": data_url(red)}}, {"type": "text", "text": "a red circle"},
             {"type": "image_url", "image_url": {"url": data_url(blue)}}]  # fmt: skip
    before = embedder_stats(server)
    first = openai_client.embeddings.create(model=model, input=items, encoding_format="float")
    after_first = embedder_stats(server)
    second = openai_client.embeddings.create(model=model, input=items)
    got = np.array([d.embedding for d in first.data], dtype=np.float32)
    np.testing.assert_allclose(got[[0, 2]], engine.embed_images([red, blue]).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[1], engine.embed_texts(["a red circle"])[0].numpy(), rtol=0, atol=1e-5)
    assert first.usage.prompt_tokens == engine.count_tokens(["a red circle"])[0] + 2 * engine.info().image_tokens
    assert (first.model_extra["cache_hit"], second.model_extra["cache_hit"]) == (False, True)
    assert "embed" in first.model_extra["timings_ms"] and "embed" not in second.model_extra["timings_ms"]
    assert after_first["images_embedded"] - before["images_embedded"] == 2
    assert embedder_stats(server) == after_first  # the second call never reached the embedder
    np.testing.assert_array_equal(np.array([d.embedding for d in second.data], dtype=np.float32), got)


def test_grpc_embed_equals_http(server, grpc_client, openai_client, model):
    image = image_bytes((5, 150, 5))
    response = grpc_client.embed(["a green square", image], model=model)
    http = openai_client.embeddings.create(model=model, input=[
        "a green square", {"type": "image_url", "image_url": {"url": data_url(image)}}])
    assert response.model == model and len(response.embeddings) == 2
    np.testing.assert_array_equal(np.array([list(e.values) for e in response.embeddings], dtype=np.float32),
                                  np.array([d.embedding for d in http.data], dtype=np.float32))
    assert response.prompt_tokens == http.usage.prompt_tokens and response.cache_hit is False


def test_cli_prints_similarities_and_json(server, tmp_path, capsys):
    path = tmp_path / "red.png"
    path.write_bytes(image_bytes((220, 0, 0)))
    assert main(["embed", "--target", server.grpc_target, "--text", "a red circle", "--image", f"@{path}"]) == 0
    out = capsys.readouterr().out
    assert "2 vectors of 32 dimensions" in out and "[1] image" in out and "1.000" in out
    assert main(["embed", "--target", server.grpc_target, "--json", "--image", str(path)]) == 0
    body = json.loads(capsys.readouterr().out)
    assert len(body["embeddings"]) == 1 and len(body["embeddings"][0]) == 32 and body["cache_hit"] is True


def test_cli_bad_input_exits_2_naming_the_field(server, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    assert main(["embed", "--target", server.grpc_target, "--text", "ok", "--image", str(bad)]) == 2
    assert "INVALID_ARGUMENT: inputs[1]" in capsys.readouterr().err
    assert main(["embed", "--target", server.grpc_target]) == 2
    assert "at least one --text" in capsys.readouterr().err


TOO_LONG = " ".join(["circle"] * 40)  # past the tiny CLIP's context of 16 tokens


@pytest.mark.parametrize("body, param", [
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": 3}, "input"),
    ({"input": [""]}, "input[0]"),
    ({"input": ["ok", "   "]}, "input[1]"),
    ({"input": ["x"] * 257}, "input"),
    ({"input": [[1, 2, 3]]}, "input[0]"),
    ({"input": [TOO_LONG]}, "input[0]"),
    ({"input": ["ok", {"type": "audio"}]}, "input[1].type"),
    ({"input": [{"type": "text"}]}, "input[0].text"),
    ({"input": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}, "input[0].image_url.url"),
    ({"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@="}}]}, "input[0].image_url.url"),
    ({"input": ["ok", {"type": "image_url", "image_url": {"url": data_url(b"not an image")}}]}, "input[1]"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 16}, "dimensions"),
    ({"input": "x", "dimensions": "32"}, "dimensions"),
    ({"input": "x", "model": "nope"}, "model"),
])  # fmt: skip
def test_bad_http_requests_get_400_naming_the_field(server, body, param):
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_bad_json_body_and_still_serving(server, model):
    response = httpx.post(f"{server.http_url}/v1/embeddings", content=b"{nope", timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "body"
    assert post(server, {"model": model, "input": "still serving"}).status_code == 200


@pytest.mark.parametrize("inputs, options, field", [
    ([], {}, "inputs"),
    (["x"] * 257, {}, "inputs"),
    (["ok", TOO_LONG], {}, "inputs[1]"),
    (["ok", b"GIF89a broken"], {}, "inputs[1]"),
    (["x"], {"dimensions": 7}, "dimensions"),
    (["x"], {"model": "nope"}, "model"),
])
def test_bad_grpc_requests_are_invalid_argument_naming_the_field(grpc_client, inputs, options, field):
    with pytest.raises(grpc.RpcError) as caught:
        grpc_client.embed(inputs, **options)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field)
    assert len(grpc_client.embed(["still serving"]).embeddings) == 1


def test_grpc_input_with_neither_text_nor_image(server):
    request = pb.EmbedRequest(inputs=[pb.ContentPart(text="ok"), pb.ContentPart()])
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.TriptychStub(channel).Embed(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("inputs[1]")
