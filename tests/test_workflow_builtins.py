"""The built-in workflows and the ops under them, run by the executor over fake stage pipelines (no
Ray, no models): requests built from scalar inputs with the server defaults, progress streamed,
best_of_n's scores in seed order, image_search with a text and an image query, describe_and_reimagine
painting its caption, chat / text_to_image / embed as the APIs' single path."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from pipelines.chat_request import ChatRequest
from pipelines.image_request import ImageRequest
from pipelines.workflow import (
    StepProgress,
    StepStarted,
    WorkflowResult,
    load_workflows,
    run_to_result,
    run_workflow,
)
from pipelines.workflow.ops import OpContext
from tests.serving import image_bytes
from tests.workflow_fakes import FakeChat, FakeEmbeddings, FakeTextToImage, fake_png, workflow_of
from triptych.config import ChatDefaults, ImageDefaults
from triptych.errors import RequestError, WorkflowError
from triptych.types import (
    ChatMessage,
    ChatUsage,
    ImageParams,
    ImageProgress,
    ImageResult,
    SamplingParams,
    TextDelta,
    TextPart,
)

WORKFLOWS = load_workflows()


@pytest.fixture
def stages():
    return FakeChat(), FakeTextToImage(), FakeEmbeddings()


def context(stages, **kw) -> OpContext:
    chat, images, embeddings = stages
    return OpContext(chat=chat, text_to_image=images, embeddings=embeddings, **kw)


def run(name, inputs, ctx) -> list:
    async def collect():
        return [event async for event in run_workflow(WORKFLOWS[name], inputs, ctx)]

    return asyncio.run(collect())


def test_best_of_n_paints_n_in_seed_order_and_returns_the_best_by_clip_score(stages):
    chat, images, _ = stages
    # The prompt's vector is (1, 0); candidate seed 12 points closest to it.
    table = {"a red circle": [1.0, 0.0]} | {fake_png("a red circle", s): [v, 1.0] for s, v in
                                            ((10, 0.0), (11, 1.0), (12, 3.0), (13, -1.0))}  # fmt: skip
    embeddings = FakeEmbeddings(table)
    events = run("best_of_n", {"prompt": "a red circle", "seed": 10}, context((chat, images, embeddings)))
    result = events[-1]
    assert result.outputs["seeds"] == [10, 11, 12, 13]  # n defaults to 4
    assert result.outputs["best_index"] == 2
    assert result.outputs["image"] == fake_png("a red circle", 12)
    expected = [v / (v * v + 1) ** 0.5 for v in (0.0, 1.0, 3.0, -1.0)]
    assert result.outputs["scores"] == pytest.approx(expected)
    assert sorted(r.params.seed for r in images.requests) == [10, 11, 12, 13]
    assert all(r.params.n == 1 and r.params.steps == ImageDefaults().steps for r in images.requests)
    started = {e.step: e for e in events if isinstance(e, StepStarted)}
    assert started["paint"].copies == 4
    progress = [e for e in events if isinstance(e, StepProgress) and e.step == "paint"]
    assert sorted({e.copy for e in progress}) == [0, 1, 2, 3]
    assert {type(e.event) for e in progress} == {ImageProgress, ImageResult}
    assert [s.step for s in result.steps] == ["paint", "embed_images", "embed_prompt", "score", "pick"]


def test_best_of_n_takes_n_and_rejects_too_many(stages):
    result = run("best_of_n", {"prompt": "a blue square", "n": 2}, context(stages))[-1]
    assert len(result.outputs["seeds"]) == 2 and len(result.outputs["scores"]) == 2
    with pytest.raises(RequestError) as info:
        run("best_of_n", {"prompt": "a blue square", "n": 100}, context(stages))
    assert info.value.field == "inputs.n"


@pytest.mark.parametrize("query_kind", ["text", "image"])
def test_image_search_ranks_images_best_first_with_scores_in_input_order(query_kind):
    images = [b"img-a", b"img-b", b"img-c"]
    table = {"a red circle": [0.0, 1.0], b"query-image": [0.0, 1.0],
             b"img-a": [1.0, 0.0], b"img-b": [1.0, 2.0], b"img-c": [1.0, 1.0]}  # fmt: skip
    embeddings = FakeEmbeddings(table)
    query = "a red circle" if query_kind == "text" else b"query-image"
    result = run("image_search", {"query": query, "images": images}, OpContext(embeddings=embeddings))[-1]
    assert result.outputs["ranking"] == [1, 2, 0]
    assert result.outputs["scores"] == pytest.approx([0.0, 2 / 5**0.5, 1 / 2**0.5])
    query_call = next(call for call in embeddings.calls if len(call) == 1)
    assert (query_call[0].text, query_call[0].image) == (("a red circle", None) if query_kind == "text"
                                                         else (None, b"query-image"))  # fmt: skip


def test_image_search_rejects_a_query_that_is_neither_text_nor_image():
    with pytest.raises(RequestError) as info:
        run("image_search", {"query": 3, "images": [b"x"]}, OpContext(embeddings=FakeEmbeddings()))
    assert (info.value.field, info.value.message) == ("inputs.query", "must be text | image, got int 3")


def test_describe_and_reimagine_paints_the_caption(stages):
    chat, images, _ = stages
    picture = image_bytes((255, 0, 0))
    result = run("describe_and_reimagine", {"image": picture, "seed": 5}, context(stages))[-1]
    assert result.outputs == {"caption": "a red circle", "image": fake_png("a red circle", 5)}
    (request,) = chat.requests
    assert request.images == [picture]
    assert request.messages[0].parts[-1] == TextPart("describe the image.")
    assert request.sampling.max_tokens == 24
    assert (request.pruning_method, request.visual_token_keep_ratio) == ("cls_attention", 0.5)  # server defaults
    (paint,) = images.requests
    assert (paint.prompt, paint.params.seed) == ("a red circle", 5)
    describe, paint_step = result.steps
    assert paint_step.started_ms >= describe.ended_ms and describe.cache_hit is True


def test_a_bad_image_fails_the_step_that_decodes_it_with_a_request_error(stages):
    with pytest.raises(RequestError) as info:
        run("describe_and_reimagine", {"image": b"not an image"}, context(stages))
    assert info.value.message.startswith("step 'describe': ")


def test_the_chat_workflow_streams_the_pipelines_events_unchanged(stages):
    chat, _, _ = stages
    request = ChatRequest((ChatMessage("user", (TextPart("hi"),)),), SamplingParams(), "none", 1.0)
    events = run("chat", {"request": request}, context(stages))
    progress = [e.event for e in events if isinstance(e, StepProgress)]
    assert progress == [TextDelta("a red ", completion_tokens=1),
                        TextDelta("circle", finish_reason="stop", completion_tokens=2),
                        ChatUsage(5, 2, 0, 0, cache_hit=True)]  # fmt: skip
    assert chat.requests == [request]  # as given: the chat APIs validated it
    assert events[-1].outputs == {"text": "a red circle", "finish_reason": "stop", "completion_tokens": 2}


def test_the_text_to_image_workflow_streams_progress_then_the_result(stages):
    _, images, _ = stages
    request = ImageRequest("a green triangle", "", ImageParams(64, 64, 2, "ddim", 5.0, seed=7, n=2))
    events = run("text_to_image", {"request": request}, context(stages))
    progress = [e.event for e in events if isinstance(e, StepProgress)]
    assert [type(e) for e in progress] == [ImageProgress, ImageProgress, ImageResult]
    assert progress[-1].seeds == (7, 8)
    assert events[-1].outputs == {"images": [fake_png("a green triangle", 7), fake_png("a green triangle", 8)],
                                  "seeds": [7, 8]}
    assert images.requests == [request]


def test_the_embed_workflow_keeps_input_order_and_mixes_texts_and_images():
    embeddings = FakeEmbeddings({"cat": [1.0, 0.0], b"png": [0.0, 2.0]})
    result = run("embed", {"items": ["cat", b"png"]}, OpContext(embeddings=embeddings))[-1]
    vectors = result.outputs["embeddings"]
    assert torch.equal(vectors, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert [(i.text, i.image) for i in embeddings.calls[0]] == [("cat", None), (None, b"png")]
    assert result.steps[0].cache_hit is False


def test_generate_from_scalars_uses_the_server_defaults_and_checks_like_the_images_api(stages):
    _, images, _ = stages
    defaults = ImageDefaults(steps=3, sampler="euler", width=32, height=48)
    wf = workflow_of("""
name: paint
inputs: {prompt: text, steps: {type: int, optional: true}}
steps:
  - {name: paint, op: generate, with: {prompt: $inputs.prompt, steps: $inputs.steps, seed: 1, guidance_scale: 2}}
outputs: {image: $paint.image, seed: $paint.seed}
""")
    result = asyncio.run(run_to_result(wf, {"prompt": "a dot"}, context(stages, image_defaults=defaults)))
    assert result.outputs == {"image": fake_png("a dot", 1), "seed": 1}
    params = images.requests[0].params
    assert dataclasses.astuple(params) == (32, 48, 3, "euler", 2.0, 1, 1, defaults.cache_interval)
    with pytest.raises(RequestError) as info:
        asyncio.run(run_to_result(wf, {"prompt": "a dot", "steps": 0}, context(stages)))
    assert info.value.field == "steps" and info.value.message.startswith("step 'paint': ")


def test_chat_from_scalars_builds_one_user_message_with_the_images_first(stages):
    chat, _, _ = stages
    picture = image_bytes((255, 0, 0))
    wf = workflow_of("""
name: ask
inputs: {q: text, pics: 'list[image]'}
steps:
  - {name: ask, op: chat, with: {prompt: $inputs.q, images: $inputs.pics, system: be brief, temperature: 1, seed: 3}}
outputs: {a: $ask.text}
""")
    asyncio.run(run_to_result(wf, {"q": "what?", "pics": [picture, picture]}, context(stages)))
    (request,) = chat.requests
    assert [m.role for m in request.messages] == ["system", "user"]
    assert len(request.images) == 2 and request.messages[1].parts[-1] == TextPart("what?")
    assert request.sampling == SamplingParams(ChatDefaults().max_tokens, 1.0, ChatDefaults().top_p, seed=3)


def test_an_op_whose_stage_this_server_lacks_fails_its_step():
    with pytest.raises(WorkflowError, match="step 'embed_query' failed: RuntimeError: this server has no "
                                            "embeddings stage"):
        run("image_search", {"query": "x", "images": [b"y"]}, OpContext())


def test_score_and_select_checks():
    wf = workflow_of("""
name: pick
inputs: {v: 'list[embedding]', q: embedding, items: 'list[text]'}
steps:
  - {name: score, op: score, with: {query: $inputs.q, candidates: $inputs.v}}
  - {name: top, op: select, with: {items: $inputs.items, scores: $score.scores, k: 2}}
outputs: {scores: $score.scores, best: $top.item, top: $top.items, indices: $top.indices}
""")
    q = torch.tensor([1.0, 0.0])
    v = [torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])]
    result = asyncio.run(run_to_result(wf, {"v": v, "q": q, "items": ["a", "b", "c"]}, OpContext()))
    assert result.outputs == {"scores": [0.5, 1.0, 0.5], "best": "b", "top": ["b", "a"], "indices": [1, 0]}  # ties: input order
    with pytest.raises(WorkflowError, match="step 'top' failed: ValueError: 2 items but 3 scores"):
        asyncio.run(run_to_result(wf, {"v": v, "q": q, "items": ["a", "b"]}, OpContext()))
    with pytest.raises(WorkflowError, match="step 'score' failed: ValueError: query has 3 dimensions, candidates 2"):
        asyncio.run(run_to_result(wf, {"v": v, "q": torch.ones(3), "items": ["a", "b", "c"]}, OpContext()))


def test_workflow_result_is_the_last_event(stages):
    events = run("best_of_n", {"prompt": "p", "n": 1}, context(stages))
    assert isinstance(events[-1], WorkflowResult) and not any(isinstance(e, WorkflowResult) for e in events[:-1])


class EndlessStream:
    """A chat / text-to-image pipeline whose stream never ends; records when it is closed."""

    def __init__(self, first):
        self.first = first
        self.streaming = asyncio.Event()
        self.closed = False

    async def run(self, request):
        try:
            yield self.first
            self.streaming.set()
            await asyncio.Event().wait()
        finally:
            self.closed = True


@pytest.mark.parametrize(("name", "first"), [("chat", TextDelta("a")), ("text_to_image", ImageProgress(1, 8, 1.0))])
def test_leaving_a_workflow_closes_the_stage_stream_under_it(name, first):
    stream = EndlessStream(first)
    request = (ChatRequest((ChatMessage("user", (TextPart("hi"),)),), SamplingParams(), "none", 1.0) if name == "chat"
               else ImageRequest("p", "", ImageParams(64, 64, 8, "ddim", 5.0, seed=1, n=1)))  # fmt: skip

    async def leave_midway():
        events = run_workflow(WORKFLOWS[name], {"request": request}, OpContext(chat=stream, text_to_image=stream))
        async for event in events:
            if isinstance(event, StepProgress):
                break
        await asyncio.wait_for(stream.streaming.wait(), 30)
        await events.aclose()

    asyncio.run(leave_midway())
    assert stream.closed
