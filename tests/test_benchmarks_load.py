"""benchmarks.load without a server: bad arguments are refused naming their flag; the percentile,
goodput and throughput maths on synthetic records; the mix, the cache-hit knob and the drivers' bounds."""

import itertools
import threading

import pytest

from benchmarks.load import parse_args
from benchmarks.load_drivers import Level, poisson_offsets, run_level
from benchmarks.load_server import loopback_target, loopback_url
from benchmarks.load_stats import Slo, percentile, summarize
from benchmarks.load_transports import Record
from benchmarks.load_workload import RequestSpec, WorkloadGenerator, WorkloadOptions, parse_mix


def refusal(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "flag", "why"), [
    (["--rates", "0"], "--rates", "> 0"),
    (["--rates", "2,-1"], "--rates", "> 0"),
    (["--rates", "fast"], "--rates", "not a comma-separated list"),
    (["--concurrency", "0"], "--concurrency", ">= 1"),
    (["--mix", "chat=1,embedding=1"], "--mix", "unknown entry 'embedding' (allowed: chat, image)"),
    (["--mix", "chat=0"], "--mix", "must be > 0"),
    (["--mix", "chat=1,chat=2"], "--mix", "appears twice"),
    (["--url", "http://10.0.0.5:8000"], "--url", "only targets loopback"),
    (["--url", "http://example.com:8000"], "--url", "only targets loopback"),
    (["--url", "ftp://127.0.0.1"], "--url", "not an http(s) URL"),
    (["--transport", "grpc", "--grpc-target", "192.168.1.2:9000"], "--grpc-target", "only targets loopback"),
    (["--transport", "grpc", "--grpc-target", "localhost"], "--grpc-target", "not a host:port"),
    (["--transport", "grpc", "--url", "http://127.0.0.1:8000"], "--grpc-target", "needed by --transport grpc"),
    (["--ray-address", "auto"], "--ray-address", "only with --url"),
    (["--requests", "0"], "--requests", "must be > 0"),
    (["--repeat-fraction", "1.5"], "--repeat-fraction", "[0, 1]"),
    (["--slo-ttft-ms", "-5"], "--slo-ttft-ms", "must be > 0"),
    (["--cooldown-s", "-1"], "--cooldown-s", ">= 0"),
    (["--retries", "-1"], "--retries", "invalid choice"),
    (["--decoder-batch", "0"], "--decoder-batch", "must be > 0"),
    (["--decoder-batch", "16", "--url", "http://127.0.0.1:8000"], "--decoder-batch", "only for the server started here"),
])
def test_bad_arguments_are_refused_naming_the_flag(capsys, argv, flag, why):
    message = refusal(capsys, argv)
    assert f"error: argument {flag}" in message or f"error: {flag}" in message, message
    assert why in message, message


def test_good_arguments_make_levels_slo_and_loopback_targets():
    args = parse_args(["--rates", "0.5,3", "--concurrency", "2", "--mix", "image=1, chat=3",
                       "--url", "http://localhost:8123/", "--slo-ttft-ms", "500"])
    assert [(level.mode, level.value) for level in args.levels] == [("open", 0.5), ("open", 3.0), ("closed", 2)]
    assert args.mix == {"image": 1.0, "chat": 3.0}
    assert args.url == "http://localhost:8123" and args.slo.ttft_s == 0.5
    assert [level.mode for level in parse_args(["--mode", "closed"]).levels] == ["closed"] * 3
    assert (args.retries, parse_args(["--retries", "0"]).retries) == (3, 0)
    assert loopback_url("http://[::1]:8000") == "http://[::1]:8000"
    assert loopback_target("127.0.0.9:9000") == "127.0.0.9:9000"


def test_the_decoder_started_here_takes_its_engines_batch_and_waiting_room(tmp_path):
    from benchmarks.load_server import autoscaling_config
    from triptych.config import DecoderBatching

    default, batching = autoscaling_config("tiny", tmp_path, 2), DecoderBatching()
    assert default.decoder_batching == batching
    assert default.llm_decoder.max_ongoing_requests == batching.max_batch_size + batching.max_waiting
    narrow = autoscaling_config("tiny", tmp_path, 2, DecoderBatching(max_batch_size=4, max_waiting=3))
    assert narrow.llm_decoder.max_ongoing_requests == 7 and narrow.decoder_batching.max_batch_size == 4


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0, 10.0]  # sorted: 1 2 3 4 10
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile(values, 95) == pytest.approx(4 + 0.8 * 6)  # position 3.8
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) != percentile([], 50)  # NaN
    with pytest.raises(ValueError, match="q must be in"):
        percentile(values, 101)


def chat(index, ttft, e2e, tokens, gaps=(), hit=None, status="ok", retries=0) -> Record:
    return Record(index, "chat", "http", 0.0, status=status, ttft_s=ttft, e2e_s=e2e, output_tokens=tokens,
                  chunk_gaps_s=list(gaps), cache_hit=hit, retries=retries)


def test_goodput_throughput_errors_and_hit_rate_on_synthetic_records():
    slo = Slo(ttft_s=1.0, tpot_s=0.1, image_e2e_s=5.0)
    records = [
        chat(0, 0.5, 1.4, 10, gaps=[0.1] * 9, hit=True),  # TPOT 0.1: meets
        chat(1, 1.5, 2.0, 6, hit=False),  # TTFT too slow
        chat(2, 0.2, 2.2, 11, hit=True),  # TPOT 0.2: too slow
        chat(3, 0.3, 0.3, 1, hit=None),  # one token: no TPOT, TTFT meets
        Record(4, "image", "http", 0.0, e2e_s=4.0, retries=1),  # meets (after one 503)
        Record(5, "image", "http", 0.0, e2e_s=6.0),  # too slow
        chat(6, None, 0.1, 0, status="503", retries=3),  # refused four times: failed, and counted as retried
        chat(7, None, 0.1, 0, status="503"),
        chat(8, None, 0.1, 0, status="RESOURCE_EXHAUSTED"),
    ]
    summary = summarize("closed", 4, records, duration_s=2.0, slo=slo)
    assert (summary.requests, summary.ok) == (9, 6)
    assert summary.goodput_per_s == 3 / 2.0  # records 0, 3, 4
    assert summary.requests_per_s == 6 / 2.0
    assert summary.output_tokens_per_s == (10 + 6 + 11 + 1) / 2.0
    assert summary.errors == {"503": 2, "RESOURCE_EXHAUSTED": 1}
    assert summary.cache_hit_rate == 2 / 3  # record 3 reported none
    assert summary.ttft_ms[50] == pytest.approx(400.0)  # median of 0.2 0.3 0.5 1.5
    assert summary.itl_ms[99] == pytest.approx(100.0)
    assert summary.image_e2e_ms[50] == pytest.approx(5000.0)
    assert summary.row()["errors"] == "503:2 RESOURCE_EXHAUSTED:1"
    assert summary.retried == summary.row()["retried"] == 2  # records 4 and 6


def test_parse_mix_accepts_bare_kinds():
    assert parse_mix("chat") == {"chat": 1.0}
    assert parse_mix(" chat=2 , image=0.5 ") == {"chat": 2.0, "image": 0.5}


@pytest.mark.parametrize("repeat_fraction", [0.0, 1.0])
def test_repeat_fraction_decides_pooled_or_fresh_images(repeat_fraction):
    generator = WorkloadGenerator(WorkloadOptions(mix={"chat": 1.0}, repeat_fraction=repeat_fraction, pool_size=2))
    specs = generator.take(12)
    pool = set(generator.pool)
    assert all(s.repeated == bool(repeat_fraction) for s in specs)
    if repeat_fraction:
        assert {s.image for s in specs} <= pool
    else:
        assert len({s.image for s in specs}) == 12 and not {s.image for s in specs} & pool


def test_same_seed_same_kinds_and_mix_proportions():
    options = WorkloadOptions(mix={"chat": 3.0, "image": 1.0}, pool_size=1, seed=5)
    kinds = [s.kind for s in WorkloadGenerator(options).take(400)]
    assert kinds == [s.kind for s in WorkloadGenerator(options).take(400)]
    assert 0.65 < kinds.count("chat") / 400 < 0.85  # 0.75 expected; seeded, so deterministic


def test_poisson_offsets_increase_with_mean_gap_one_over_rate():
    offsets = poisson_offsets(rate=4.0, n=2000, seed=1)
    assert all(b > a for a, b in itertools.pairwise(offsets))
    assert offsets[-1] / len(offsets) == pytest.approx(0.25, rel=0.1)
    assert offsets == poisson_offsets(rate=4.0, n=2000, seed=1)


def specs(n) -> list[RequestSpec]:
    return [RequestSpec(i, "chat", "q") for i in range(n)]


def test_closed_loop_keeps_exactly_n_in_flight_and_sends_each_spec_once():
    lock, state = threading.Lock(), {"now": 0, "peak": 0}
    first_three = threading.Barrier(3, timeout=30)  # breaks (an error record) unless 3 run at once

    def send(spec, scheduled):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        if spec.index < 3:
            first_three.wait()
        with lock:
            state["now"] -= 1
        return Record(spec.index, spec.kind, "fake", scheduled, e2e_s=0.0)

    run = run_level(Level("closed", 3), specs(30), send, max_seconds=60)
    assert sorted(r.index for r in run.records) == list(range(30))
    assert all(r.ok for r in run.records) and state["peak"] == 3


def test_open_loop_stop_event_bounds_the_level_and_errors_become_records():
    stop = threading.Event()

    def send(spec, scheduled):
        if spec.index == 2:
            stop.set()
            raise RuntimeError("client bug")
        return Record(spec.index, spec.kind, "fake", scheduled, e2e_s=0.0)

    run = run_level(Level("open", 1000.0), specs(10_000), send, max_seconds=60, max_inflight=1, stop=stop)
    assert len(run.records) < 10_000
    failed = [r for r in run.records if not r.ok]
    assert [(r.index, r.status, r.error) for r in failed] == [(2, "RuntimeError", "client bug")]
