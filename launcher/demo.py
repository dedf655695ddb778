"""`make demo`: start Triptych on embedded defaults, ask about a bundled toy-world image (twice:
the second time from the embedding cache), generate an image and grade both with the toy oracle."""

from __future__ import annotations

import time
from pathlib import Path

from triptych.config import TriptychConfig

DEMO_IMAGE = Path(__file__).parent / "assets" / "demo.png"  # toy.world's scene below, rendered
DEMO_QUESTIONS = (  # (question, expected answer): the first is asked twice to show the cache
    ("what colour is the square?", "blue"),
    ("what shape is at the top-left?", "circle"),
    ("how many shapes are there?", "two"),
)
DEMO_PROMPT = "a red circle"
DEMO_OUTPUT = Path("out") / "demo-generated.png"


def run_demo(config: TriptychConfig) -> int:
    from deployments.server import serving
    from launcher.client import TriptychClient

    started = time.perf_counter()
    print(f"Starting Triptych (profile {config.profile}): embedded Redis, local Ray, Serve ...", flush=True)
    with serving(config, quiet=True) as server:
        print(f"Ready in {time.perf_counter() - started:.1f} s: HTTP {server.http_url}/v1, "
              f"gRPC {server.grpc_target}, chat {server.chat_model_path.name}, "
              f"images {server.image_model_path.name}", flush=True)
        print(f"open {server.http_url}/  (the browser page, while the demo runs; `make serve` keeps it up)\n",
              flush=True)
        image = DEMO_IMAGE.read_bytes()
        with TriptychClient(server.grpc_target) as client:
            asks = [DEMO_QUESTIONS[0], *DEMO_QUESTIONS]
            for number, (question, expected) in enumerate(asks, start=1):
                _ask(client, number, image, question, expected)
            _generate(client)
        print("Shutting down ...", flush=True)
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    return 0


def _ask(client, number: int, image: bytes, question: str, expected: str) -> None:
    from toy.oracle import grade_answer

    print(f"[{number}] user: <{DEMO_IMAGE.name}> {question}\n[{number}] triptych: ", end="", flush=True)
    answer = []
    for message in client.chat(question, [image], max_tokens=32):
        answer.append(message.delta)
        print(message.delta, end="", flush=True)
        if message.HasField("usage"):
            usage = message.usage
            verdict = "right" if grade_answer("".join(answer), expected) else f"wrong (expected {expected!r})"
            timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(usage.timings_ms.items()))
            print(f"\n    oracle: {verdict}\n    cache_hit={usage.cache_hit}  visual_tokens="
                  f"{usage.visual_tokens_kept}/{usage.visual_tokens_in}  tokens={usage.prompt_tokens}+"
                  f"{usage.completion_tokens}\n    timings_ms: {timings}\n", flush=True)


def _generate(client) -> None:
    import io

    from PIL import Image

    from toy.oracle import grade_image
    from triptych.v1 import triptych_pb2 as pb

    print(f"[image] generate {DEMO_PROMPT!r} (seed 0) ", end="", flush=True)
    for event in client.generate_image(pb.GenerateImageRequest(prompt=DEMO_PROMPT, seed=0)):
        if event.HasField("progress"):
            print(".", end="", flush=True)
            continue
        png = event.result.images[0].png
        DEMO_OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        DEMO_OUTPUT.write_bytes(png)
        grade = grade_image(Image.open(io.BytesIO(png)), DEMO_PROMPT)
        verdict = "accepted" if grade.both else f"rejected (colour ok: {grade.colour_ok}, shape ok: {grade.shape_ok})"
        timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(event.result.timings_ms.items()))
        print(f"\n    saved {DEMO_OUTPUT.resolve()}\n    oracle: {verdict}\n    timings_ms: {timings}\n",
              flush=True)
