"""Attention supervision of the toy VLM's LM: which objects an answer is read from, where the answers
start, and the recomputed head attention equals the model's own (eager) attention weights."""

import torch

from toy import world
from toy.lookup_supervision import (
    HeadAttentionProbe,
    answer_objects,
    answer_positions,
    key_position,
    key_word,
    lookup_loss,
)
from toy.world import QA, Obj, Scene

SCENE = Scene(objects=(Obj("circle", "red", "large", 0, 0), Obj("square", "red", "small", 2, 2)))


def test_answer_objects_per_question_type():
    circle, square = SCENE.objects
    assert answer_objects(SCENE, QA("what colour is the square?", "red", "colour")) == [square]
    assert answer_objects(SCENE, QA("which shape is at the top-left?", "circle", "shape")) == [circle]
    assert answer_objects(SCENE, QA("where is the red circle?", "top-left", "position")) == [circle]
    assert answer_objects(SCENE, QA("how many shapes are there?", "two", "count")) == [circle, square]
    assert answer_objects(SCENE, QA("is there a red square in the image?", "yes", "exists")) == [square]
    assert answer_objects(SCENE, QA("is there a blue square?", "no", "exists")) is None
    assert answer_objects(SCENE, QA("describe the image.", world.caption(SCENE), "describe")) is None


def test_every_generated_question_with_an_object_finds_one():
    for i in range(40):
        scene = world.make_scene("train", i)
        for qa in world.questions(scene):
            objects = answer_objects(scene, qa)
            assert objects is None or len(objects) >= 1, qa


def test_key_words_name_what_to_look_up():
    assert key_word(QA("What colour is the circle?", "red", "colour")) == "circle"
    assert key_word(QA("which shape is at the top-left?", "circle", "shape")) == "top-left"
    assert key_word(QA("is there a red square in the image?", "yes", "exists")) == "square"
    assert key_word(QA("how many shapes are there?", "two", "count")) is None
    ids = torch.tensor([5, 9, 7, 9, 2, 9, 8])
    assert key_position(ids, answer_at=6, key=9, after=-1) == 5  # the last one before the answer
    assert key_position(ids, answer_at=4, key=9, after=-1) == 3
    assert key_position(ids, answer_at=6, key=9, after=5) is None  # only this turn's question counts


def test_answer_positions_mark_the_token_before_each_answer():
    labels = torch.tensor([-100, -100, 7, 2, -100, -100, 9, 2])
    assert answer_positions(labels, -100) == [1, 5]


def test_probe_equals_eager_attention_and_the_loss_rewards_looking_at_the_object():
    from transformers import LlamaForCausalLM

    from toy.vlm import llama_config

    torch.manual_seed(0)
    lm = LlamaForCausalLM(llama_config(64, hidden=32, layers=2, heads=4))
    lm.set_attn_implementation("eager")  # returns its weights: the reference
    probe = HeadAttentionProbe(lm.model.layers[-1].self_attn, head=1)
    ids = torch.randint(4, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    reference = lm(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[-1][:, 1]  # (B, T, T)
    weights = probe.weights(mask)
    torch.testing.assert_close(weights[0], reference[0])
    torch.testing.assert_close(weights[1, :7, :7], reference[1, :7, :7])

    image_token = 3
    ids = torch.tensor([[1, image_token, image_token, 5, 6]])  # two "visual tokens" at positions 1, 2
    labels = torch.tensor([[-100, -100, -100, -100, 6]])  # the answer starts at 4: predicted at 3
    looks = torch.zeros(1, 5, 5)
    looks[0, 3, 2] = 1.0  # position 3 looks only at the second visual token
    on_target = lookup_loss(looks, ids, labels, [[(torch.tensor([False, True]), None)]], image_token, -100)
    off_target = lookup_loss(looks, ids, labels, [[(torch.tensor([True, False]), None)]], image_token, -100)
    assert on_target < 1e-4 < off_target
    looks[0, 3, 2], looks[0, 4, 1] = 0.0, 1.0  # now the key token 6 (at position 4) looks at the first
    labels = torch.tensor([[-100, -100, -100, -100, -100, 6]])
    ids = torch.tensor([[1, image_token, image_token, 5, 6, 6]])
    from_key = lookup_loss(looks, ids, labels, [[(torch.tensor([True, False]), 6)]], image_token, -100)
    assert from_key < 1e-4
