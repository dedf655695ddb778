"""`make demo`: start Triptych on embedded defaults, ask about a bundled image twice, stop."""

from __future__ import annotations

import time
from pathlib import Path

from triptych.config import TriptychConfig

DEMO_IMAGE = Path(__file__).parent / "assets" / "demo.png"
DEMO_QUESTION = "What shapes are in the image, and what colour is each?"


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
        print("Shutting down ...", flush=True)
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    return 0
