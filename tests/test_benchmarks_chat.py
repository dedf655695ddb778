"""Smoke test of the chat benchmark: ``--quick --no-serve`` on the tiny profile (in-process paths, no
Ray) prints every row and comparison and writes matching JSON. No timing thresholds (DESIGN.md)."""

import json

import torch

from benchmarks import chat

IN_PROCESS_PATHS = ("local_miss", "local_hit", "engine", "transformers")


def test_quick_in_process_benchmark_prints_the_expected_table(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # main() sets it; restored after the test
    json_path = tmp_path / "chat.json"
    argv = ["--quick", "--no-serve", "--model-dir", str(tmp_path / "models"), "--json", str(json_path),
            "--threads", str(torch.get_num_threads())]  # fmt: skip
    assert chat.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(json_path.read_text())

    assert (result["profile"], result["model"], result["source"]) == ("tiny", "tiny-hf-llava", "hf_llava")
    assert result["machine"]["cpu_model"] and result["machine"]["cpu_cores"] >= 1
    assert list(result["paths"]) == list(IN_PROCESS_PATHS)  # no Serve rows without Serve
    for name in IN_PROCESS_PATHS:
        assert f"| {chat.PATHS[name]} " in out
        path = result["paths"][name]
        assert len(path["samples"]["ttft_ms"]) == 1 and 0 < path["ttft_ms"] <= path["total_ms"]
    tokens = {t for p in result["paths"].values() for t in p["tokens"]}
    assert len(tokens) == 1 and 0 < tokens.pop() <= 8  # greedy: every path generates the same count
    assert "encode" in result["paths"]["local_miss"]["stages_ms"]
    assert "encode" not in result["paths"]["local_hit"]["stages_ms"]  # the hit never ran the encoder
    assert set(result["encoder"]) == {"batch_1_images_per_s", "batch_8_images_per_s"}
    assert "| batch 1 " in out and "| batch 8 " in out

    claims = [c["claim"] for c in result["comparisons"]]
    assert claims == [
        "cache hit vs miss, TTFT speed-up (in-process)",
        "cache hit vs miss, decode tok/s ratio (in-process)",
        "encoder batch 8 vs batch 1, images/s",
        "Triptych (in-process miss) vs transformers, TTFT speed-up",
        "Triptych (in-process miss) vs transformers, total speed-up",
        "Triptych (in-process hit) vs transformers, TTFT speed-up",
        "Triptych (in-process hit) vs transformers, total speed-up",
    ]
    assert all(f"| {claim} " in out for claim in claims)
    assert result["notes"] == ["transformers baseline prompt ids identical to Triptych's: yes"]
