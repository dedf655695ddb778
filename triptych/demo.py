"""`make demo`: start Triptych on embedded defaults, ask about a bundled image twice, stop."""

from __future__ import annotations

import time
from pathlib import Path

from triptych.config import TriptychConfig

DEMO_IMAGE = Path(__file__).parent / "assets" / "demo.png"
DEMO_QUESTION = "What shapes are in the image, and what colour is each?"
DEMO_PROMPT = "a red circle"
DEMO_OUTPUT = Path("out") / "demo-generated.png"


def run_demo(config: TriptychConfig) -> int:
    from triptych.client import TriptychClient
    from triptych.server import serving

    started = time.perf_counter()
    print(f"Starting Triptych (profile {config.profile}): embedded Redis, local Ray, Serve ...", flush=True)
    with serving(config, quiet=True) as server:
        print(f"Ready in {time.perf_counter() - started:.1f} s: HTTP {server.http_url}/v1, "
              f"gRPC {server.grpc_target}, model {server.chat_model_path.name}\n", flush=True)
        image = DEMO_IMAGE.read_bytes()
        with TriptychClient(server.grpc_target) as client:
            for attempt in (1, 2):
                print(f"[{attempt}] user: <{DEMO_IMAGE.name}> {DEMO_QUESTION}\n[{attempt}] triptych: ",
                      end="", flush=True)
                for message in client.chat(DEMO_QUESTION, [image], max_tokens=24):
                    print(message.delta, end="", flush=True)
                    if message.HasField("usage"):
                        usage = message.usage
                        timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(usage.timings_ms.items()))
                        print(f"\n    cache_hit={usage.cache_hit}  visual_tokens={usage.visual_tokens_kept}"
                              f"/{usage.visual_tokens_in}  tokens={usage.prompt_tokens}+"
                              f"{usage.completion_tokens}\n    timings_ms: {timings}\n", flush=True)
            _generate(client)
        print("Shutting down ...", flush=True)
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    return 0


def _generate(client) -> None:
    from triptych.v1 import triptych_pb2 as pb

    print(f"[3] generate: {DEMO_PROMPT!r} (seed 0) ", end="", flush=True)
    for event in client.generate_image(pb.GenerateImageRequest(prompt=DEMO_PROMPT, seed=0)):
        if event.HasField("progress"):
            print(".", end="", flush=True)
        else:
            DEMO_OUTPUT.parent.mkdir(parents=True, exist_ok=True)
            DEMO_OUTPUT.write_bytes(event.result.images[0].png)
            timings = ", ".join(f"{k}={v:.1f}" for k, v in sorted(event.result.timings_ms.items()))
            print(f"\n    saved {DEMO_OUTPUT.resolve()}\n    timings_ms: {timings}\n", flush=True)
