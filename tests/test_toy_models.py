"""The shipped toy VLM: it loads with the real loaders and answers held-out questions mostly right;
training inputs are built exactly like serving builds them."""

import json

import pytest
import torch

from toy import CHECKPOINTS, world

TOY_VLM = CHECKPOINTS / "toy-vlm"


@pytest.fixture(scope="module")
def vlm():
    from toy.vlm import load_vlm

    return load_vlm(TOY_VLM)


def test_toy_vlm_is_an_open_clip_llava_checkpoint():
    from models import detect_source, load_chat_tokenizer

    assert detect_source(TOY_VLM) == "open_clip_llava"
    manifest = json.loads((TOY_VLM / "triptych_model.json").read_text())
    assert manifest["num_patches"] == 64 and manifest["image_size"] == 64
    chat = load_chat_tokenizer(TOY_VLM)
    assert chat.image_token == "<image>"


# Guessing the most common answer gets ~30% of these; the benchmark (benchmarks.quality) measures
# the model's real accuracy on 500 questions. These bounds catch a broken checkpoint or loader.
HELDOUT = {"n": 45, "split": "test", "qtypes": ("colour", "shape", "count")}


def test_toy_vlm_answers_heldout_questions(vlm):
    from toy.vlm import evaluate_vqa

    acc = evaluate_vqa(vlm, world.vqa_items(**HELDOUT))
    assert acc["all"] >= 0.6 and acc["count"] >= 0.8, acc


def test_toy_vlm_answers_with_pruned_tokens(vlm):
    from toy.vlm import evaluate_vqa

    acc = evaluate_vqa(vlm, world.vqa_items(**HELDOUT), keep_ratio=0.5, pruning_method="cls_attention")
    assert acc["all"] >= 0.55, acc


def test_training_inputs_match_serving(vlm):
    """build_sequence's first prompt is ChatPromptBuilder's; embed_inputs equals LLMEngine.embed_prompt."""
    from toy.vlm import IGNORE, build_sequence, embed_inputs, user_message

    llm = vlm.llm
    tokenizer = llm.tokenizer
    for image_first in (True, False):
        question, answer = "what colour is the circle?", "red"
        ids, labels = build_sequence(
            llm.prompt_builder,
            tokenizer,
            [(question, answer), ("how many shapes are there?", "two")],
            16,
            image_first,
        )
        prompt = llm.prompt_builder.build([user_message(question, image_first)], [16])
        assert ids[: len(prompt)] == prompt and all(lab == IGNORE for lab in labels[: len(prompt)])
        answer_ids = [t for t, lab in zip(ids, labels) if lab != IGNORE]
        assert tokenizer.decode(answer_ids) == " red</s> two</s>"
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}] if image_first
              else [{"type": "text", "text": question}, {"type": "image"}]},
             {"role": "assistant", "content": answer}], tokenize=True, return_dict=False)  # fmt: skip
        n_prefix = len(prompt) + 2  # " red" "</s>"
        expanded = [t for t in full if t != llm.image_token_id]
        assert [t for t in ids[:n_prefix] if t != llm.image_token_id] == expanded
    visual = torch.randn(16, llm.embed_tokens.weight.shape[1])
    ours = embed_inputs(torch.tensor([prompt]), visual[None], llm.embed_tokens, llm.image_token_id)
    theirs = llm.embed_prompt(prompt, [visual])
    torch.testing.assert_close(ours, theirs)


def test_toy_profile_resolves_shipped_checkpoints(tmp_path):
    from models.profiles import PROFILES, resolve_chat_model

    assert PROFILES["toy"].chat_model == "toy-vlm" and PROFILES["toy"].image_model == "toy-sd"
    assert resolve_chat_model("toy", tmp_path) == TOY_VLM
