"""Fakes for the workflow tests: a workflow built from YAML text against any op registry, and
stage pipelines that answer instantly (chat, text-to-image, embeddings) and record what they got."""

from __future__ import annotations

import hashlib

import torch
import yaml

from pipelines.workflow.load import parse_workflow
from pipelines.workflow.spec import Problem, Workflow
from pipelines.workflow.validate import validate_workflow
from triptych.errors import RequestError
from triptych.types import ChatUsage, ImageProgress, ImageResult, TextDelta


def problems_of(text: str, ops=None, source: str = "test.yaml") -> list[Problem]:
    workflow, problems = parse_workflow(yaml.safe_load(text), source)
    if workflow is None:
        return problems
    _, invalid = validate_workflow(workflow, **({} if ops is None else {"ops": ops}))
    return problems + invalid


def workflow_of(text: str, ops=None) -> Workflow:
    workflow, problems = parse_workflow(yaml.safe_load(text), "test.yaml")
    workflow, invalid = validate_workflow(workflow, **({} if ops is None else {"ops": ops}))
    assert not problems + invalid, [str(p) for p in problems + invalid]
    return workflow


class FakeChat:
    """ChatPipeline: answers ``answer`` in two deltas, then usage; records each request."""

    def __init__(self, answer: str = "a red circle"):
        self.answer = answer
        self.requests = []

    async def run(self, request):
        self.requests.append(request)
        half = len(self.answer) // 2
        yield TextDelta(self.answer[:half], completion_tokens=1)
        yield TextDelta(self.answer[half:], finish_reason="stop", completion_tokens=2)
        yield ChatUsage(5, 2, 0, 0, cache_hit=True)


def fake_png(prompt: str, seed: int) -> bytes:
    return f"png:{prompt}:{seed}".encode()


class FakeTextToImage:
    """TextToImagePipeline: two progress events, then one 'image' per seed (bytes naming prompt and seed)."""

    def __init__(self):
        self.requests = []

    async def run(self, request):
        self.requests.append(request)
        for step in (1, 2):
            yield ImageProgress(step, 2, float(step))
        seeds = tuple(request.params.seed + i for i in range(request.params.n))
        yield ImageResult(tuple(fake_png(request.prompt, s) for s in seeds), seeds, cache_hit=False)


class FakeEmbeddingResult:
    def __init__(self, vectors, cache_hit):
        self.vectors, self.cache_hit, self.timings_ms = vectors, cache_hit, {}


class FakeEmbeddings:
    """EmbeddingPipeline: a vector looked up in ``table`` (text or image bytes), else one from a hash."""

    def __init__(self, table: dict | None = None, dim: int = 4):
        self.table = table or {}
        self.dim = dim
        self.calls: list[list] = []

    async def embed(self, items, field="input"):
        if not items:
            raise RequestError(field, "must not be empty")
        self.calls.append(list(items))
        rows = [self._vector(item.text if item.text is not None else item.image) for item in items]
        return FakeEmbeddingResult(torch.nn.functional.normalize(torch.stack(rows), dim=-1), cache_hit=False)

    def _vector(self, key) -> torch.Tensor:
        if key in self.table:
            return torch.tensor(self.table[key], dtype=torch.float32)
        data = key.encode() if isinstance(key, str) else key
        digest = hashlib.sha256(data).digest()
        return torch.tensor([b - 127.5 for b in digest[: self.dim]], dtype=torch.float32)
