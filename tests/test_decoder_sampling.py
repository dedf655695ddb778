"""next_token: greedy, temperature + top-p sampling, seeding; check_sampling_params at its boundaries."""

import pytest
import torch

from decoders.sampling import check_sampling_params, make_generator, next_token
from triptych.errors import RequestError
from triptych.types import SamplingParams


def draws(logits, params, n=200):
    generator = make_generator(params, logits.device)
    return [next_token(logits, params, generator) for _ in range(n)]


def test_greedy_is_argmax_first_on_ties():
    logits = torch.tensor([0.1, 2.0, -1.0, 2.0])
    assert next_token(logits, SamplingParams(temperature=0.0), None) == 1


def test_tiny_top_p_is_greedy():
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(50)
        params = SamplingParams(temperature=1.0, top_p=1e-6, seed=3)
        assert set(draws(logits, params, n=20)) == {int(logits.argmax())}


def test_top_p_keeps_the_nucleus_only():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    seen = set(draws(logits, SamplingParams(temperature=1.0, top_p=0.7, seed=0), n=400))
    assert seen == {0, 1}  # 0.5 < 0.7 <= 0.8: tokens 0 and 1 make the nucleus
    assert set(draws(logits, SamplingParams(temperature=1.0, top_p=1.0, seed=0), n=400)) == {0, 1, 2, 3}


def test_same_seed_same_tokens_different_seed_different():
    logits = torch.zeros(1000)
    a = draws(logits, SamplingParams(temperature=1.0, seed=7), n=50)
    b = draws(logits, SamplingParams(temperature=1.0, seed=7), n=50)
    c = draws(logits, SamplingParams(temperature=1.0, seed=8), n=50)
    assert a == b
    assert a != c


def test_temperature_sharpens():
    logits = torch.tensor([1.0, 0.0])
    cold = draws(logits, SamplingParams(temperature=0.05, seed=1), n=200)
    assert cold.count(0) == 200


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("knobs", [
    {"temperature": 0.0}, {"temperature": 2.0}, {"temperature": 0}, {"temperature": 2},  # both ends
    {"top_p": 1.0}, {"top_p": 1e-9}, {"top_p": 1},
    {"max_tokens": 1}, {"max_tokens": 128},
    {"seed": None}, {"seed": -(2**63)}, {"seed": 2**64 - 1},
])
def test_boundary_values_inside_are_accepted(knobs):
    check_sampling_params(SamplingParams(**knobs), max_tokens_limit=128)


@pytest.mark.parametrize("knobs, message", [
    ({"temperature": 2.5}, "temperature: 2.5 is outside 0..2"),
    ({"temperature": 2.0000001}, "temperature: 2.0000001 is outside 0..2"),
    ({"temperature": -1e-9}, "temperature: -1e-09 is outside 0..2"),
    ({"temperature": NAN}, "temperature: nan is outside 0..2"),
    ({"temperature": INF}, "temperature: inf is outside 0..2"),
    ({"temperature": "0.5"}, "temperature: must be a number, got str"),
    ({"temperature": True}, "temperature: must be a number, got bool"),
    ({"top_p": 0.0}, "top_p: 0.0 is outside (0, 1]"),
    ({"top_p": 1.0000001}, "top_p: 1.0000001 is outside (0, 1]"),
    ({"top_p": NAN}, "top_p: nan is outside (0, 1]"),
    ({"top_p": -INF}, "top_p: -inf is outside (0, 1]"),
    ({"top_p": None}, "top_p: must be a number, got NoneType"),
    ({"max_tokens": 0}, "max_tokens: 0 is outside 1..128"),
    ({"max_tokens": 129}, "max_tokens: 129 is outside 1..128"),
    ({"max_tokens": 3.0}, "max_tokens: must be an integer, got float"),
    ({"max_tokens": False}, "max_tokens: must be an integer, got bool"),
    ({"seed": 2**64}, "seed: 18446744073709551616 is outside -2**63..2**64-1"),
    ({"seed": -(2**63) - 1}, "seed: -9223372036854775809 is outside -2**63..2**64-1"),
    ({"seed": "x"}, "seed: must be an integer, got str"),
    ({"seed": 1.5}, "seed: must be an integer, got float"),
])
def test_values_outside_are_rejected_with_the_rule_in_the_message(knobs, message):
    with pytest.raises(RequestError) as info:
        check_sampling_params(SamplingParams(**knobs), max_tokens_limit=128)
    assert str(info.value) == message
    assert info.value.field == next(iter(knobs))


def test_without_a_limit_max_tokens_is_bounded_below_only():
    check_sampling_params(SamplingParams(max_tokens=10**6))  # the engine's context check bounds it
    with pytest.raises(RequestError, match="max_tokens: 0 must be >= 1"):
        check_sampling_params(SamplingParams(max_tokens=0))


def test_every_accepted_seed_seeds_a_generator():
    for seed in (-(2**63), 2**64 - 1):
        assert make_generator(SamplingParams(temperature=1.0, seed=seed), torch.device("cpu")) is not None
