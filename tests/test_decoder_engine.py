"""LLMEngine on a tiny random Llama: parity with transformers, sampling, stopping, streaming, limits."""

import pytest
import torch

from decoders.detokenizer import IncrementalDetokenizer
from decoders.engine import LLMEngine
from tests.tiny_decoder import tiny_language_model_parts, tiny_tokenizer
from triptych.errors import ContextLengthError, RequestError
from triptych.types import ChatMessage, ImagePart, SamplingParams, TextPart

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def parts():
    return tiny_language_model_parts(seed=0)


@pytest.fixture(scope="module")
def engine(parts):
    return LLMEngine(parts)


def text_prompt(engine, text="Tell me a story."):
    return engine.prompt_builder.build([ChatMessage("user", (TextPart(text),))], [])


def image_prompt(engine, counts=(3, 2)):
    message = ChatMessage(
        "user", (TextPart("What is in "), ImagePart(b"a"), TextPart(" and "), ImagePart(b"b"))
    )
    return engine.prompt_builder.build([message], list(counts))


def hf_generate(model, prompt_ids, max_new_tokens):
    input_ids = torch.tensor([prompt_ids])
    out = model.generate(input_ids, do_sample=False, max_new_tokens=max_new_tokens)
    return out[0, len(prompt_ids) :].tolist()


def collect(deltas):
    deltas = list(deltas)
    assert all(d.finish_reason is None for d in deltas[:-1])
    return "".join(d.text for d in deltas), deltas[-1]


def test_greedy_without_images_matches_transformers_generate(parts, engine):
    prompt = text_prompt(engine)
    expected = hf_generate(parts.model, prompt, GREEDY.max_tokens)
    assert engine.eos_token_ids.isdisjoint(expected)  # this seed runs to max_tokens
    assert list(engine.generate_ids(prompt, [], GREEDY)) == expected
    text, last = collect(engine.generate(prompt, [], GREEDY))
    assert text == parts.tokenizer.decode(expected, skip_special_tokens=True)
    assert (last.finish_reason, last.completion_tokens) == ("length", GREEDY.max_tokens)


def test_greedy_with_images_matches_full_recompute(parts, engine):
    prompt = image_prompt(engine, (3, 2))
    torch.manual_seed(1)
    images = [torch.randn(3, 32), torch.randn(2, 32)]  # (K_i, D)
    embed = parts.model.get_input_embeddings()
    with torch.no_grad():
        ids = torch.tensor(prompt)
        slots = ids == parts.image_token_id
        embeds = embed(ids).clone()  # (T, D)
        embeds[slots] = torch.cat(images)
        generated = []
        for _ in range(GREEDY.max_tokens):  # no KV cache: re-run the whole sequence every step
            logits = parts.model(inputs_embeds=embeds[None]).logits[0, -1]  # (V,)
            token = int(logits.argmax())
            if token in engine.eos_token_ids:
                break
            generated.append(token)
            embeds = torch.cat([embeds, embed(torch.tensor([token]))])
    assert list(engine.generate_ids(prompt, images, GREEDY)) == generated
    # the engine's inputs_embeds are exactly the ones built here: image rows in order, text rows untouched
    built = engine.embed_prompt(prompt, images)  # (1, T, D)
    assert torch.equal(built[0], embeds[: len(prompt)])


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine):
    prompt = text_prompt(engine)
    runs = {
        seed: list(engine.generate_ids(prompt, [], SamplingParams(max_tokens=16, temperature=1.0, seed=seed)))
        for seed in (1, 2)
    }
    again = list(engine.generate_ids(prompt, [], SamplingParams(max_tokens=16, temperature=1.0, seed=1)))
    assert again == runs[1]
    assert runs[1] != runs[2]


def test_tiny_top_p_equals_greedy(engine):
    prompt = text_prompt(engine)
    nucleus = SamplingParams(max_tokens=16, temperature=0.8, top_p=1e-6, seed=5)
    greedy = SamplingParams(max_tokens=16)
    assert list(engine.generate_ids(prompt, [], nucleus)) == list(engine.generate_ids(prompt, [], greedy))


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_max_tokens_gives_length(engine, max_tokens):
    deltas = list(engine.generate(text_prompt(engine), [], SamplingParams(max_tokens=max_tokens)))
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert last.completion_tokens == max_tokens
    assert set(last.timings_ms) == {"prefill", "decode"}
    assert all(v >= 0 for v in last.timings_ms.values())
    assert [d.completion_tokens for d in deltas] == sorted(d.completion_tokens for d in deltas)


def test_eos_stops_with_stop_and_is_not_emitted():
    parts = tiny_language_model_parts(seed=0)
    prompt = text_prompt(LLMEngine(parts))
    reference = hf_generate(parts.model, prompt, 12)
    j = 4
    stop_token = reference[j]
    first = reference.index(stop_token)  # stop at the first time this token comes
    parts.model.generation_config.eos_token_id = [parts.tokenizer.eos_token_id, stop_token]
    engine = LLMEngine(parts)
    assert list(engine.generate_ids(prompt, [], SamplingParams(max_tokens=12))) == reference[:first]
    text, last = collect(engine.generate(prompt, [], SamplingParams(max_tokens=12)))
    assert (last.finish_reason, last.completion_tokens) == ("stop", first)
    assert text == parts.tokenizer.decode(reference[:first], skip_special_tokens=True)


def test_eos_as_argmax_stops_immediately():
    parts = tiny_language_model_parts(seed=0)
    hidden, vocab = parts.model.config.hidden_size, parts.model.config.vocab_size
    head = torch.nn.Linear(hidden, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[parts.tokenizer.eos_token_id] = 10.0  # EOS is the most likely token everywhere
    parts.model.lm_head = head
    deltas = list(LLMEngine(parts).generate(text_prompt(LLMEngine(parts)), [], SamplingParams(max_tokens=8)))
    assert len(deltas) == 1
    assert deltas[0].text == ""
    assert (deltas[0].finish_reason, deltas[0].completion_tokens) == ("stop", 0)
    assert deltas[0].timings_ms["prefill"] > 0


def test_context_overflow_names_messages(engine):
    prompt = image_prompt(engine, (40, 30))
    images = [torch.zeros(40, 32), torch.zeros(30, 32)]
    max_tokens = engine.context_length - len(prompt) + 1
    with pytest.raises(ContextLengthError) as info:
        engine.generate(prompt, images, SamplingParams(max_tokens=max_tokens))  # raises before iteration
    assert info.value.field == "messages"
    assert f"{len(prompt)} prompt tokens (incl. 70 visual)" in info.value.message
    assert f"max_tokens {max_tokens}" in info.value.message
    assert str(engine.context_length) in info.value.message
    engine.check_fits(len(prompt), max_tokens - 1)  # exactly full fits


def test_bad_inputs_fail_before_streaming(engine):
    prompt = image_prompt(engine, (3, 2))
    with pytest.raises(ValueError, match="5 image-token slots"):
        engine.generate(prompt, [torch.zeros(3, 32)], GREEDY)
    with pytest.raises(ValueError, match=r"\(K, 32\)"):
        engine.generate(prompt, [torch.zeros(3, 32), torch.zeros(2, 16)], GREEDY)
    with pytest.raises(RequestError) as info:
        engine.generate(prompt, [torch.zeros(3, 32), torch.zeros(2, 32)], SamplingParams(top_p=2.0))
    assert info.value.field == "top_p"


def test_deltas_concatenate_to_full_text(parts, engine):
    prompt = text_prompt(engine, "Schreib über Übermut 🙂")
    params = SamplingParams(max_tokens=40, temperature=1.5, seed=11)  # random bytes: many split characters
    ids = list(engine.generate_ids(prompt, [], params))
    deltas = list(engine.generate(prompt, [], params))
    assert "".join(d.text for d in deltas) == parts.tokenizer.decode(ids, skip_special_tokens=True)
    assert deltas[-1].completion_tokens == len(ids)


def test_detokenizer_holds_back_partial_characters():
    tokenizer = tiny_tokenizer()
    text = "héllo wörld 🙂 ✓"
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + detokenizer.flush() == text
    assert "" in pieces  # the multi-byte characters were held back for a step


def test_early_stop_releases_and_leaves_grad_mode_alone(engine):
    stream = engine.generate(text_prompt(engine), [], SamplingParams(max_tokens=50, temperature=1.0, seed=0))
    next(stream)
    # between yields the consumer is not in inference mode
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    next(stream)
    stream.close()  # what happens when the consumer stops iterating
    assert stream.gi_frame is None  # frame (and the KV cache it held) is gone
    with pytest.raises(StopIteration):
        next(stream)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_greedy_parity_and_seeded_sampling():
    parts = tiny_language_model_parts(seed=0)
    parts.model.to("cuda")
    engine = LLMEngine(parts)
    prompt = image_prompt(engine, (3, 2))
    images = [torch.randn(3, 32), torch.randn(2, 32)]  # on CPU: the engine moves them
    ids = list(engine.generate_ids(prompt, images, GREEDY))
    assert ids == list(engine.generate_ids(prompt, [i.cuda() for i in images], GREEDY))
    sampled = SamplingParams(max_tokens=16, temperature=1.0, seed=4)
    text_ids = text_prompt(engine)
    assert list(engine.generate_ids(text_ids, [], sampled)) == list(
        engine.generate_ids(text_ids, [], sampled)
    )
    expected = parts.model.generate(
        torch.tensor([text_ids], device="cuda"), do_sample=False, max_new_tokens=8
    )
    assert (
        list(engine.generate_ids(text_ids, [], SamplingParams(max_tokens=8)))
        == expected[0, len(text_ids) :].tolist()
    )
