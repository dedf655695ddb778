"""The shipped toy models: they load with the real loaders and answer held-out questions mostly right;
training inputs are built exactly like serving builds them; the training commands still run."""

import json

import pytest
import torch

from toy import CHECKPOINTS, world

TOY_CLIP = CHECKPOINTS / "toy-clip"
TOY_VLM = CHECKPOINTS / "toy-vlm"


@pytest.fixture(scope="module")
def vlm():
    from toy.vlm import load_vlm

    return load_vlm(TOY_VLM)


@pytest.fixture(scope="module")
def clip():
    from toy.clip import load_clip

    return load_clip(TOY_CLIP)


def test_toy_vlm_is_an_open_clip_llava_checkpoint():
    from models import detect_source, load_chat_tokenizer

    assert detect_source(TOY_VLM) == "open_clip_llava"
    manifest = json.loads((TOY_VLM / "triptych_model.json").read_text())
    assert manifest["num_patches"] == 64 and manifest["image_size"] == 64
    chat = load_chat_tokenizer(TOY_VLM)
    assert chat.image_token == "<image>"


def test_toy_vlm_answers_heldout_questions(vlm):
    items = world.vqa_items(30, split="test", qtypes=("colour", "shape", "count"))[10:30]  # 20 items
    from toy.vlm import evaluate_vqa

    acc = evaluate_vqa(vlm, items)
    assert acc["all"] >= 0.8, acc


def test_toy_vlm_answers_with_pruned_tokens(vlm):
    items = world.vqa_items(20, split="test", qtypes=("colour", "shape", "count"))
    from toy.vlm import evaluate_vqa

    acc = evaluate_vqa(vlm, items, keep_ratio=0.5, pruning_method="cls_attention")
    assert acc["all"] >= 0.6, acc


def test_toy_clip_loads_with_open_clip_and_picks_captions(clip):
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{TOY_CLIP}")
    assert model.visual.grid_size == (8, 8)
    from toy.clip import zero_shot_single

    acc = zero_shot_single(clip, n=30, split="test")
    assert acc["both"] >= 0.8, acc
    items = world.t2i_items(6)
    scores = clip.clip_score([world.render(it.scene) for it in items], [it.prompt for it in items])
    wrong = clip.clip_score(
        [world.render(it.scene) for it in items], [it.prompt for it in items[1:] + items[:1]]
    )
    assert (scores > wrong).float().mean() >= 0.8


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


def test_training_commands_run(tmp_path):
    """A few steps of each training command on a small pool, end to end (weights, loaders, report)."""
    from toy import train_clip, train_vlm

    clip_dir, vlm_dir = tmp_path / "clip", tmp_path / "vlm"
    train_clip.main(["--out", str(clip_dir), "--steps", "2", "--batch-size", "8", "--n-multi", "40",
                     "--n-groups", "4", "--eval-every", "0", "--eval-items", "12", "--threads", "1"])  # fmt: skip
    assert json.loads((clip_dir / "training.json").read_text())["steps"] == 2
    train_vlm.main(["--clip", str(clip_dir), "--out", str(vlm_dir), "--steps", "2", "--batch-size", "4",
                    "--n-images", "20", "--n-single", "4", "--eval-every", "0", "--eval-items", "6",
                    "--val-items", "12", "--threads", "1"])  # fmt: skip
    from models import load_language_model, load_vision_tower

    assert load_vision_tower(vlm_dir).num_patches == 64
    assert load_language_model(vlm_dir).model_id == "toy-vlm"
