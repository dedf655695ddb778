"""benchmarks.embeddings runs end to end in-process on the shipped toy CLIP (32 inputs, no Serve) and its
table and JSON agree; the toy retrieval it reports ranks the red circle first. No timing thresholds."""

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


def test_in_process_throughput_and_toy_retrieval(tmp_path, capsys):
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
    retrieval = result["retrieval"]
    assert retrieval["n"] == 30 and retrieval["red_circle_rank"] == 1
    assert retrieval["text_to_image_top1"] >= 0.9  # measured 100% (README)
    table = capsys.readouterr().out
    assert f"{100 * retrieval['text_to_image_top1']:.1f}%" in table and "in-process images" in table
