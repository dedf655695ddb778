"""next_token: greedy, temperature + top-p sampling, seeding; check_sampling_params field names."""

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


@pytest.mark.parametrize(
    "params, field",
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-0.5), "temperature"),
        (SamplingParams(temperature=float("nan")), "temperature"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(seed="x"), "seed"),
    ],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(RequestError) as info:
        check_sampling_params(params)
    assert info.value.field == field
