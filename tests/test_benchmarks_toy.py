"""The toy-profile benchmarks run end to end on the shipped toy models (a handful of items) and write
tables and JSON that agree with each other. No timing thresholds (DESIGN.md)."""

import json
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    """main() sets OMP_NUM_THREADS and torch's thread count: restore both afterwards."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
    torch.set_num_threads(threads)


def test_efficiency_quality_and_denoise_sections(tmp_path, capsys):
    from benchmarks import efficiency

    out = tmp_path / "efficiency.json"
    argv = ["--quick", "--threads", "1", "--sections", "quality,denoise", "--questions", "12", "--prompts", "3",
            "--json", str(out)]  # fmt: skip
    assert efficiency.main(argv) == 0
    result = json.loads(out.read_text())
    quality = result["quality"]
    assert quality["n"] == 12 and quality["visual_tokens"] == 64
    assert len(quality["rows"]) == 1 + len(efficiency.METHODS) * len(efficiency.QUALITY_RATIOS)
    base = quality["rows"][0]
    assert (base["method"], base["relative"]) == ("none", 1.0)
    for row in quality["rows"][1:]:  # keep ratio 1.0 is no pruning, for every method
        if row["keep_ratio"] == 1.0:
            assert row["accuracy"] == base["accuracy"]
    rows = result["denoise"]["rows"]
    assert {(r["sampler"], r["steps"]) for r in rows} == {(s, k) for s in efficiency.SAMPLERS for k in (4, 8)}
    assert all(0 <= r["oracle_both"] <= 1 and r["latent_error"] >= 0 for r in rows)
    printed = capsys.readouterr().out
    assert "Visual token pruning: quality" in printed and "Denoising with DeepCache" in printed


def test_quality_benchmark(tmp_path, capsys):
    from benchmarks import quality

    out = tmp_path / "quality.json"
    assert quality.main(["--threads", "1", "--questions", "12", "--prompts", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["vlm"]["n"] == 12 and set(result["vlm"]["per_type"]) == {
        "colour", "shape", "count", "exists", "position", "describe"}  # fmt: skip
    assert [(r["sampler"], r["steps"], r["n"]) for r in result["images"]] == [("ddim", 50, 3), ("dpmpp_2m", 8, 3)]
    assert 0 <= result["clip"]["captions"] <= 1
    assert "Toy VLM (12 held-out questions" in capsys.readouterr().out


def test_embeddings_in_process_throughput_and_toy_retrieval(tmp_path, capsys):
    from benchmarks import embeddings

    out = tmp_path / "embeddings.json"
    argv = ["--profile", "toy", "--inputs", "32", "--repeats", "2", "--threads", "1", "--no-serve", "--json", str(out)]
    assert embeddings.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "toy-clip" and "serve" not in result
    for kind in ("texts", "images"):
        rates = result["in_process"][kind]
        assert set(rates["per_s"]) == {"1", "32"} and rates["ratio"] == pytest.approx(
            rates["per_s"]["32"] / rates["per_s"]["1"])
    retrieval = result["retrieval"]  # the 30 single-object toy images against their 30 captions
    assert retrieval["n"] == 30 and retrieval["red_circle_rank"] == 1
    assert retrieval["text_to_image_top1"] >= 0.9  # measured 100% (README)
    table = capsys.readouterr().out
    assert f"{100 * retrieval['text_to_image_top1']:.1f}%" in table and "in-process images" in table
