"""Workflows through Serve: does fan-out overlap, does a server-side chain beat a client's, does batching
embeddings pay? (`python -m benchmarks.workflows`, profile toy by default).

Three measurements, each side by side in one run on one Triptych started here:
- `best_of_n` with n = 1, 2, 4, 8: wall time per request against n (the n `generate` copies run at once
  and the denoiser's `@serve.batch` batches them, so time grows far slower than n), and the denoiser
  batches each request took;
- `describe_and_reimagine` (one request) against the same two steps called one after another by a
  client (`/v1/chat/completions`, then `/v1/images/generations` with the caption);
- `/v1/embeddings` with 32 texts in one request against 32 requests of one text, each text new (no
  cache hits).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.common import configure_process, emit, log, model_root
from benchmarks.report import machine_summary, markdown_table

FAN_OUT = (1, 2, 4, 8)
CAPTION_PROMPT = "describe the image."  # the built-in's own chat prompt
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--profile", default="toy", help="model profile (default toy)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds per cell (median quoted)")
    parser.add_argument("--fan-out", type=int, nargs="+", default=list(FAN_OUT))
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each replica")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of best_of_n time vs n")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_process(args.threads)
    from deployments.server import serving
    from triptych.config import DeploymentOptions, TriptychConfig
    from triptych.ports import free_port

    config = TriptychConfig(
        profile=args.profile, model_dir=model_root(args), http_port=free_port(), grpc_port=free_port(),
        ingress=DeploymentOptions(num_cpus=0.1, max_ongoing_requests=64, max_queued_requests=64),
        denoiser=DeploymentOptions(num_cpus=0.5, max_ongoing_requests=16),
    )
    log(f"starting Triptych (profile {args.profile})")
    with serving(config, quiet=True) as server, httpx.Client(base_url=server.http_url, timeout=600) as http:
        denoiser = server.deployment_handle("Denoiser")
        image = _sample_image(http)
        _warm_up(http, image)
        fan_out = _fan_out(http, denoiser, args.fan_out, args.repeats)
        chain = _chain(http, image, args.repeats)
        embeddings = _embeddings(http, args.repeats)
    result = {"profile": args.profile, "machine": machine_summary(), "fan_out": fan_out, "chain": chain, "embeddings": embeddings}
    emit(result, _tables(result), args.json)
    if args.plot:
        _plot(fan_out, args.plot)
        log(f"wrote {args.plot}")
    return 0


def _fan_out(http: httpx.Client, denoiser, ns: list[int], repeats: int) -> list[dict]:
    rows = []
    for n in ns:
        times, batches = [], []
        for round_ in range(repeats):
            before = denoiser.stats.remote().result()["batches"]
            started = time.perf_counter()
            body = _post(http, "/v1/workflows/best_of_n", {"inputs": {"prompt": f"a red circle {round_}",
                                                                       "n": n, "seed": 100 * round_}})
            times.append(time.perf_counter() - started)
            batches.append(denoiser.stats.remote().result()["batches"] - before)
            assert len(body["outputs"]["scores"]) == n
        rows.append({"n": n, "median_s": statistics.median(times), "denoiser_batches": statistics.median(batches)})
        log(f"best_of_n n={n}: {rows[-1]['median_s']:.2f} s, {rows[-1]['denoiser_batches']} denoiser batches")
    return rows


def _chain(http: httpx.Client, image: str, repeats: int) -> dict:
    workflow, client = [], []
    for round_ in range(repeats):
        started = time.perf_counter()
        _post(http, "/v1/workflows/describe_and_reimagine", {"inputs": {"image": image, "seed": round_}})
        workflow.append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = _post(http, "/v1/chat/completions", {"max_tokens": 24, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": CAPTION_PROMPT}]}]})
        caption = answer["choices"][0]["message"]["content"]
        _post(http, "/v1/images/generations", {"prompt": caption, "seed": round_})
        client.append(time.perf_counter() - started)
    return {"workflow_s": statistics.median(workflow), "client_chain_s": statistics.median(client)}


def _embeddings(http: httpx.Client, repeats: int) -> dict:
    batched, single = [], []
    for round_ in range(repeats):
        texts = [f"a {round_} {i} red circle" for i in range(64)]
        started = time.perf_counter()
        _post(http, "/v1/embeddings", {"input": texts[:32], "encoding_format": "float"})
        batched.append(time.perf_counter() - started)
        started = time.perf_counter()
        for text in texts[32:]:
            _post(http, "/v1/embeddings", {"input": text, "encoding_format": "float"})
        single.append(time.perf_counter() - started)
    return {"batch32_s": statistics.median(batched), "one_by_one_s": statistics.median(single),
            "batch32_texts_per_s": 32 / statistics.median(batched),
            "one_by_one_texts_per_s": 32 / statistics.median(single)}  # fmt: skip


def _post(http: httpx.Client, path: str, body: dict) -> dict:
    response = http.post(path, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return response.json()


def _sample_image(http: httpx.Client) -> str:
    """A toy-world picture to describe: painted by the server itself (any profile has a denoiser)."""
    body = _post(http, "/v1/images/generations", {"prompt": "a red circle", "seed": 1})
    return f"data:image/png;base64,{body['data'][0]['b64_json']}"


def _warm_up(http: httpx.Client, image: str) -> None:
    _post(http, "/v1/workflows/best_of_n", {"inputs": {"prompt": "warm up", "n": 2}})
    _post(http, "/v1/workflows/describe_and_reimagine", {"inputs": {"image": image}})
    _post(http, "/v1/embeddings", {"input": ["warm up"], "encoding_format": "float"})


def _tables(result: dict) -> str:
    base = result["fan_out"][0]
    fan = markdown_table(["n", "median s", "x of n=1", "denoiser batches"],
                       [[r["n"], f"{r['median_s']:.2f}", f"{r['median_s'] / base['median_s']:.2f}",
                         f"{r['denoiser_batches']:g}"] for r in result["fan_out"]])  # fmt: skip
    chain = result["chain"]
    chained = markdown_table(["describe_and_reimagine", "median s"], [
        ["one workflow request", f"{chain['workflow_s']:.2f}"],
        ["client calls chat then images", f"{chain['client_chain_s']:.2f}"],
        ["ratio client / workflow", f"{chain['client_chain_s'] / chain['workflow_s']:.2f}"]])
    emb = result["embeddings"]
    embedded = markdown_table(["embeddings, 32 new texts", "texts/s"], [
        ["one request of 32", f"{emb['batch32_texts_per_s']:.1f}"],
        ["32 requests of 1", f"{emb['one_by_one_texts_per_s']:.1f}"],
        ["ratio", f"{emb['batch32_texts_per_s'] / emb['one_by_one_texts_per_s']:.2f}"]])
    return f"profile {result['profile']}\n\nbest_of_n\n{fan}\n\n{chained}\n\n{embedded}"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in rows]
    base = rows[0]["median_s"]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(ns, [r["median_s"] for r in rows], "o-", label="best_of_n (measured)")
    axes.plot(ns, [base * n for n in ns], "--", color="grey", label="n x the n=1 time (no overlap)")
    axes.set_xlabel("n (candidates)")
    axes.set_ylabel("seconds per request (median)")
    axes.set_xticks(ns)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
