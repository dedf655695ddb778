"""Smoke test of the text-to-image benchmark: ``--quick --no-serve`` on the tiny profile (in-process
sections, no Ray) prints every table and writes matching JSON. No timing thresholds (DESIGN.md)."""

import json
import math

import pytest
import torch

from benchmarks import text_to_image as bench


@pytest.fixture
def one_thread(monkeypatch):
    """main() sets OMP_NUM_THREADS and torch's thread count: restore both afterwards."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def test_quick_in_process_benchmark_prints_the_expected_tables(tmp_path, capsys, one_thread):
    json_path = tmp_path / "t2i.json"
    argv = [
        "--quick",
        "--no-serve",
        "--threads",
        "1",
        "--model-dir",
        str(tmp_path / "models"),
        "--json",
        str(json_path),
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(json_path.read_text())
    grid = bench.QUICK

    assert (result["profile"], result["model"]) == ("tiny", "tiny-sd")
    assert result["machine"]["cpu_model"] and result["machine"]["cpu_cores"] >= 1
    assert "profile `tiny`" in out and result["machine"]["cpu_model"] in out
    assert result["settings"]["size"] == "64x64" and result["serve"] is None
    assert not any("differ between rounds" in note for note in result["notes"])  # deterministic

    rows = result["samplers"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [(s, n) for s in bench.SAMPLERS for n in grid.steps]
    for r in rows:
        assert r["denoise_ms"] > 0 and 0 < r["error"] < 2 and r["speedup_vs_ddim_max"] > 0
        assert f"| {r['sampler']} " in out
    ddim = {r["steps"]: r["error"] for r in rows if r["sampler"] == "ddim"}
    assert ddim[max(grid.steps)] < ddim[1]  # more steps land closer to the reference

    cached = result["deep_cache"]
    assert len(cached) == len(grid.cache_samplers) * len(grid.cache_steps) * len(grid.cache_intervals)
    for r in cached:
        assert r["full_unet_calls"] == math.ceil(r["steps"] / r["cache_interval"])
        if r["cache_interval"] == 1:
            assert r["error_vs_interval_1"] == 0 and r["speedup_vs_interval_1"] == 1
        else:
            assert 0 < r["error_vs_interval_1"] < 0.2

    baseline = result["baseline"]
    assert set(baseline) == {"diffusers", "triptych_engine"}  # no Serve row without Serve
    assert baseline["diffusers"]["scheduler"] == "PNDMScheduler"
    assert baseline["diffusers"]["unet_calls"] >= grid.baseline_steps
    assert baseline["triptych_engine"]["steps"] == 8 and baseline["diffusers"]["speedup_vs_diffusers"] == 1
    assert "diffusers StableDiffusionPipeline (baseline)" in out

    vae = result["vae"]
    assert vae["decode_1_image_ms"] > 0 and vae["latent_bytes_per_image"] == 4 * 8 * 8 * 4
    for title in (
        "### Samplers x steps",
        "### DeepCache",
        "### Triptych vs the plain diffusers",
        "### VAE decode",
    ):
        assert title in out
    assert "### Serve" not in out
