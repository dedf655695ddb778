"""Workflows through a running Triptych (the session `server`, profile tiny): the built-ins and a user
workflow over HTTP, gRPC and the CLI, streaming step events, request-time input errors, cancellation,
and a bad workflow file stopping the start-up."""

import asyncio
import base64
import json
import time

import grpc
import httpx
import pytest

from deployments.app import app_builder
from launcher.cli import main as cli_main
from pipelines.workflow import WorkflowFileError
from tests.serving import data_url, image_bytes
from triptych.v1 import triptych_pb2 as pb

RED, GREEN, BLUE = image_bytes((220, 30, 30)), image_bytes((30, 200, 30)), image_bytes((30, 30, 220))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(server, name: str, inputs: dict, **extra) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v1/workflows/{name}", json={"inputs": inputs, **extra}, timeout=120)


def sse_events(response: httpx.Response) -> list:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_lists_the_client_workflows_with_typed_inputs_and_outputs(server):
    listed = {w["name"]: w for w in httpx.get(f"{server.http_url}/v1/workflows").json()["data"]}
    assert {"describe_and_reimagine", "best_of_n", "image_search", "embed", "paint_and_score"} <= set(listed)
    assert "chat" not in listed and "text_to_image" not in listed  # parsed requests: their own APIs run them
    assert listed["best_of_n"]["inputs"]["n"] == {"type": "int", "required": False, "default": 4,
                                                  "description": listed["best_of_n"]["inputs"]["n"]["description"]}
    assert listed["image_search"]["inputs"]["query"]["type"] == "text | image"
    assert set(listed["best_of_n"]["outputs"]) == {"image", "best_index", "scores", "seeds"}


def test_best_of_n_over_http_scores_every_seed_and_returns_the_best(server):
    body = run(server, "best_of_n", {"prompt": "a red circle", "n": 3, "seed": 40}).json()
    outputs = body["outputs"]
    assert outputs["seeds"] == [40, 41, 42]
    assert len(outputs["scores"]) == 3 and all(-1.0 <= s <= 1.0 for s in outputs["scores"])
    assert outputs["best_index"] == max(range(3), key=outputs["scores"].__getitem__)
    assert base64.b64decode(outputs["image"]).startswith(PNG_MAGIC)
    steps = {step["name"]: step for step in body["steps"]}
    assert set(steps) == {"paint", "embed_images", "embed_prompt", "score", "pick"}
    # embed_prompt needs only the request, paint too: they ran at the same time
    assert steps["embed_prompt"]["started_ms"] < steps["paint"]["ended_ms"]
    assert steps["paint"]["started_ms"] < steps["embed_prompt"]["ended_ms"]
    # embed_images waits for paint's images; score for both embeddings
    assert steps["embed_images"]["started_ms"] >= steps["paint"]["ended_ms"]
    assert steps["score"]["started_ms"] >= max(steps["embed_images"]["ended_ms"], steps["embed_prompt"]["ended_ms"])


def test_best_of_n_image_is_the_one_its_seed_paints(server):
    """The chosen image is byte-identical to the candidate painted alone with the same seed."""
    outputs = run(server, "best_of_n", {"prompt": "a green square", "n": 2, "seed": 5}).json()["outputs"]
    chosen_seed = outputs["seeds"][outputs["best_index"]]
    alone = httpx.post(f"{server.http_url}/v1/images/generations", timeout=120,
                       json={"prompt": "a green square", "seed": chosen_seed}).json()
    assert alone["data"][0]["b64_json"] == outputs["image"]


def test_image_search_ranks_by_score_for_a_text_and_an_image_query(server):
    images = [data_url(RED), data_url(GREEN), data_url(BLUE)]
    for query in ("a blue square", data_url(GREEN)):
        outputs = run(server, "image_search", {"query": query, "images": images}).json()["outputs"]
        assert sorted(outputs["ranking"]) == [0, 1, 2] and len(outputs["scores"]) == 3
        assert [outputs["scores"][i] for i in outputs["ranking"]] == sorted(outputs["scores"], reverse=True)
    assert outputs["ranking"][0] == 1  # an image query finds itself first (cosine 1)


def test_describe_and_reimagine_captions_then_paints(server):
    body = run(server, "describe_and_reimagine", {"image": data_url(RED), "seed": 3})
    assert body.status_code == 200, body.text
    outputs = body.json()["outputs"]
    assert isinstance(outputs["caption"], str) and outputs["caption"]
    assert base64.b64decode(outputs["image"]).startswith(PNG_MAGIC)
    steps = {step["name"]: step for step in body.json()["steps"]}
    assert steps["paint"]["started_ms"] >= steps["describe"]["ended_ms"]


def test_a_user_workflow_from_workflows_dir_runs(server):
    outputs = run(server, "paint_and_score", {"prompt": "a small yellow star"}).json()["outputs"]
    assert outputs["seed"] == 7 and len(outputs["scores"]) == 1
    assert base64.b64decode(outputs["image"]).startswith(PNG_MAGIC)


def test_streaming_sends_step_events_in_order_then_the_result(server):
    events = sse_events(run(server, "paint_and_score", {"prompt": "a small yellow star", "seed": 8}, stream=True))
    kinds = [(e["type"], e.get("step")) for e in events]
    assert kinds[-1] == ("result", None) and events[-1]["outputs"]["seed"] == 8
    for step in ("paint", "embed_image", "embed_prompt", "score"):
        assert kinds.index(("step.started", step)) < kinds.index(("step.finished", step))
    progress = [e for e in events if e["type"] == "step.progress" and e["step"] == "paint"]
    assert [p["denoise_step"] for p in progress] == [1, 2] and progress[-1]["total_steps"] == 2
    assert kinds.index(("step.finished", "paint")) < kinds.index(("step.started", "embed_image"))


@pytest.mark.parametrize("inputs, param", [
    ({}, "inputs.prompt"),  # required, missing
    ({"prompt": 3}, "inputs.prompt"),  # mistyped
    ({"prompt": "x", "n": "four"}, "inputs.n"),
    ({"prompt": "x", "n": 0}, "inputs.n"),  # fan-out out of 1..16
    ({"prompt": "x", "colour": "red"}, "inputs.colour"),  # not an input
])
def test_bad_inputs_are_400_naming_the_input_on_http(server, inputs, param):
    response = run(server, "best_of_n", inputs)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200


def test_a_bad_image_and_an_unknown_workflow(server):
    response = run(server, "image_search", {"query": "x", "images": [data_url(RED), "data:image/png;base64,AAAA"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "inputs.images[1]"
    missing = run(server, "no_such_flow", {})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"


def _grpc_inputs(**values) -> dict:
    def value(v):
        if isinstance(v, bytes):
            return pb.WorkflowValue(image=v)
        if isinstance(v, int):
            return pb.WorkflowValue(int_value=v)
        if isinstance(v, list):
            return pb.WorkflowValue(list=pb.WorkflowList(items=[value(item) for item in v]))
        return pb.WorkflowValue(text=v)

    return {name: value(v) for name, v in values.items()}


def test_run_workflow_over_grpc_streams_steps_then_typed_outputs(grpc_client):
    responses = list(grpc_client.run_workflow("best_of_n", _grpc_inputs(prompt="a red circle", n=2, seed=9)))
    result = responses[-1].result
    assert [item.int_value for item in result.outputs["seeds"].list.items] == [9, 10]
    assert result.outputs["image"].image.startswith(PNG_MAGIC)
    assert len(result.outputs["scores"].list.items) == 2
    states = [(r.step.step, r.step.state) for r in responses[:-1] if r.step.state != "progress"]
    assert states.index(("paint", "started")) < states.index(("paint", "finished"))
    assert [s.name for s in result.steps] == ["paint", "embed_images", "embed_prompt", "score", "pick"]
    search = list(grpc_client.run_workflow("image_search", _grpc_inputs(query=GREEN, images=[RED, GREEN])))
    reimagined = list(grpc_client.run_workflow("describe_and_reimagine", _grpc_inputs(image=BLUE, seed=4)))[-1]
    assert reimagined.result.outputs["caption"].text and reimagined.result.outputs["image"].image.startswith(PNG_MAGIC)
    assert search[-1].result.outputs["ranking"].list.items[0].int_value == 1


@pytest.mark.parametrize("name, inputs, code, detail", [
    ("best_of_n", {"prompt": 3}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.prompt"),
    ("best_of_n", {"prompt": "x", "n": 99}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.n"),
    ("image_search", {"query": "x", "images": [b"not an image"]}, grpc.StatusCode.INVALID_ARGUMENT, "inputs.images[0]"),
    ("no_such_flow", {}, grpc.StatusCode.NOT_FOUND, "no_such_flow"),
])
def test_bad_workflow_requests_over_grpc(grpc_client, name, inputs, code, detail):
    with pytest.raises(grpc.RpcError) as err:
        list(grpc_client.run_workflow(name, _grpc_inputs(**inputs)))
    assert err.value.code() == code and detail in err.value.details()
    assert grpc_client.health() == "SERVING"


def test_cli_runs_a_workflow_and_writes_its_image(server, tmp_path, capsys):
    (tmp_path / "red.png").write_bytes(RED)
    (tmp_path / "blue.png").write_bytes(BLUE)
    (tmp_path / "best").mkdir()
    code = cli_main(["workflow", "image_search", "--target", server.grpc_target, "--input", "query=@" +
                     str(tmp_path / "blue.png"), "--input", f"images=@{tmp_path / 'red.png'},@{tmp_path / 'blue.png'}"])
    out = capsys.readouterr().out
    assert code == 0 and "ranking: [1, 0]" in out and "[rank finished" in out
    code = cli_main(["workflow", "paint_and_score", "--target", server.grpc_target, "--input", "prompt=a red circle",
                     "--input", "seed=11", "--output-dir", str(tmp_path)])
    assert code == 0 and (tmp_path / "image.png").read_bytes().startswith(PNG_MAGIC)
    assert "seed: 11" in capsys.readouterr().out
    code = cli_main(["workflow", "best_of_n", "--target", server.grpc_target, "--input", "prompt=a red circle",
                     "--input", "n=2", "--input", "seed=20", "--output-dir", str(tmp_path / "best")])
    out = capsys.readouterr().out
    assert code == 0 and "seeds: [20, 21]" in out and (tmp_path / "best" / "image.png").is_file()
    code = cli_main(["workflow", "describe_and_reimagine", "--target", server.grpc_target, "--input",
                     f"image=@{tmp_path / 'red.png'}", "--output-dir", str(tmp_path / "best")])
    out = capsys.readouterr().out
    assert code == 0 and "caption: " in out and "[describe started" in out and "[paint finished" in out
    assert cli_main(["workflow", "best_of_n", "--target", server.grpc_target, "--input", "n=4"]) == 2
    assert "inputs.prompt" in capsys.readouterr().err


def test_a_client_going_away_cancels_the_running_steps(server):
    """A streamed workflow whose paint step runs 150 denoising steps: the client hangs up after the
    second progress event and the denoiser's loop stops long before the end."""
    denoiser = server.deployment_handle("Denoiser")
    before = denoiser.stats.remote().result()["steps_run"]

    async def start_then_hang_up() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"inputs": {"prompt": "a long job", "steps": 150}, "stream": True}
            async with client.stream("POST", f"{server.http_url}/v1/workflows/paint_and_score", json=body) as response:
                seen = 0
                async for line in response.aiter_lines():
                    seen += '"step.progress"' in line
                    if seen == 2:
                        break  # leaving the block closes the connection

    asyncio.run(start_then_hang_up())
    deadline = time.monotonic() + 60
    while denoiser.stats.remote().result()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = denoiser.stats.remote().result()
    assert stats["in_flight"] == 0 and 2 <= stats["steps_run"] - before < 150


def test_a_bad_workflow_file_stops_the_builder_with_every_problem(tmp_path):
    (tmp_path / "broken.yaml").write_text(
        "name: broken\ndescription: x\ninputs: {prompt: {type: text}}\n"
        "steps:\n  - {name: a, op: paint_it, with: {prompt: $inputs.prompt}}\n"
        "  - {name: b, op: score, with: {query: $nowhere.embedding}}\noutputs: {x: $a.image}\n")
    with pytest.raises(WorkflowFileError) as err:
        app_builder({"profile": "tiny", "model_dir": str(tmp_path / "models"), "workflows_dir": str(tmp_path)})
    text = str(err.value)
    assert "broken.yaml" in text and "paint_it" in text and "nowhere" in text
