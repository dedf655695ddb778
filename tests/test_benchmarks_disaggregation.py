"""benchmarks.disaggregation without a server: bad arguments are refused naming their flag, both designs
ask for the same CPU, and the reporting (chats beside images, TTFT percentiles, images/min, goodput, the
ratios, the CSVs and the PNG) on synthetic records."""

import csv

import pytest

from benchmarks.disaggregation import (
    DesignResult,
    chats_beside_images,
    cpu_budget,
    monolith_config,
    parse_args,
    ratios,
    separate_config,
    summarize_design,
    table,
    write_results,
)
from benchmarks.load_drivers import Level, LevelRun
from benchmarks.load_replicas import ReplicaSample
from benchmarks.load_transports import Record


@pytest.mark.parametrize(("argv", "flag", "why"), [
    (["--mix", "chat=1"], "--mix", "needs both chat and image"),
    (["--mix", "chat=1,embedding=1"], "--mix", "unknown entry 'embedding'"),
    (["--rates", "2,0"], "--rates", "> 0"),
    (["--cpus", "0.1"], "--cpus", "at least 0.25"),
    (["--repeat-fraction", "2"], "--repeat-fraction", "[0, 1]"),
    (["--cpus", "4096"], "--cpus", "exceeds the"),
])
def test_bad_arguments_are_refused_naming_the_flag(capsys, argv, flag, why):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    message = capsys.readouterr().err
    assert exit_info.value.code == 2 and (f"argument {flag}" in message or f"error: {flag}" in message), message
    assert why in message, message


@pytest.mark.parametrize(("cpus", "replicas"), [(1.9, 2), (1.0, 1), (1.5, 3)])
def test_both_designs_ask_for_the_same_cpu(tmp_path, cpus, replicas):
    args = parse_args(["--cpus", str(cpus), "--monolith-replicas", str(replicas), "--model-dir", str(tmp_path)])
    separate, monolith = cpu_budget("separate", separate_config(args)), cpu_budget("monolith", monolith_config(args))
    assert sum(separate.values()) == pytest.approx(cpus) == pytest.approx(sum(monolith.values()))
    assert set(separate) == {"TriptychIngress", "VisionEncoder", "LLMDecoder", "TextEncoder", "Denoiser"}
    assert monolith_config(args).ingress.min_replicas == monolith_config(args).ingress.max_replicas == replicas


def _chat(index: int, start: float, ttft: float) -> Record:
    return Record(index, "chat", "http", start, ttft_s=ttft, e2e_s=ttft + 0.3, output_tokens=4)


def _run(ttfts_alone: list[float], ttfts_beside: list[float], image_s: float, rate: float = 2.0) -> LevelRun:
    """One image request in flight over [10, 10 + image_s); chats before it and during it."""
    records = [Record(0, "image", "http", 10.0, e2e_s=image_s)]
    records += [_chat(1 + i, 1.0 + i * 0.1, t) for i, t in enumerate(ttfts_alone)]
    records += [_chat(100 + i, 10.0 + i * 0.1, t) for i, t in enumerate(ttfts_beside)]
    records.append(Record(200, "chat", "http", 2.0, status="503", e2e_s=0.01))
    return LevelRun(Level("open", rate), records, started_s=0.0, duration_s=30.0)


def _result(design: str, *runs: LevelRun) -> DesignResult:
    samples = [ReplicaSample(t, {design.title(): 1, "CacheServer": 1}, {}) for t in (0.0, 0.5, 1.0)]
    return DesignResult(design, {design.title(): 2.0}, list(runs), [samples])


def test_reporting_on_synthetic_records(tmp_path):
    args = parse_args(["--rates", "2,4", "--slo-ttft-ms", "500", "--slo-tpot-ms", "1000", "--out", str(tmp_path)])
    separate = _result("separate", _run([0.1, 0.1], [0.2, 0.2], 1.0), _run([0.1], [0.3], 1.0, rate=4.0))
    monolith = _result("monolith", _run([0.1, 0.1], [0.9, 1.5], 2.0), _run([0.1], [3.0], 2.0, rate=4.0))
    assert [r.index for r in chats_beside_images(monolith.runs[0].records)] == [100, 101]
    summaries = [summarize_design(result, rate, args.slo) for rate in (2.0, 4.0) for result in (separate, monolith)]
    s, m = summaries[:2]
    assert (s.level.ok, s.level.requests) == (5, 6) and s.level.errors == {"503": 1}
    assert s.ttft_p99_beside_images_ms == pytest.approx(200.0)
    assert m.level.ttft_ms[50] == pytest.approx(500.0)  # the median of 100, 100, 900, 1500 ms
    assert s.images_per_min == pytest.approx(2.0) == m.images_per_min  # one image in 30 s
    assert s.goodput_fraction == pytest.approx(5 / 6) and m.goodput_fraction == pytest.approx(3 / 6)
    ratio = ratios(summaries, 2.0)
    assert ratio["chat TTFT p99 beside images"] == pytest.approx(200.0 / m.ttft_p99_beside_images_ms)
    assert ratio["images/min"] == pytest.approx(1.0)
    assert ratios(summaries, 4.0)["chat TTFT p99 beside images"] == pytest.approx(0.1)  # 300 / 3000 ms
    assert "| separate" in table(summaries) and "503:1" in table(summaries)
    paths = write_results(args, [separate, monolith], summaries)
    assert {p.name for p in paths} == {"summary.csv", "requests.csv", "replicas.csv", "disaggregation.png"}
    assert (tmp_path / "disaggregation.png").stat().st_size > 10_000
    with (tmp_path / "requests.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * (6 + 4)  # every record of both designs at both rates
