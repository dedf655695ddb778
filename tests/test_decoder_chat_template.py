"""ChatPromptBuilder: template rendering, image placeholder expansion, and its error cases."""

import pytest

from decoders.chat_template import ChatPromptBuilder
from tests.tiny_decoder import IMAGE, tiny_tokenizer
from triptych.errors import RequestError
from triptych.types import ChatMessage, ImagePart, TextPart


@pytest.fixture(scope="module")
def builder():
    tokenizer = tiny_tokenizer()
    return ChatPromptBuilder(tokenizer, IMAGE, tokenizer.convert_tokens_to_ids(IMAGE))


def image_runs(ids, image_id):
    """Lengths of the runs of consecutive image ids, in order."""
    runs, current = [], 0
    for t in ids + [None]:
        if t == image_id:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


MULTI_TURN = [
    ChatMessage("system", (TextPart("You describe images."),)),
    ChatMessage("user", (TextPart("Compare "), ImagePart(b"a"), TextPart(" and "), ImagePart(b"b"))),
    ChatMessage("assistant", (TextPart("The first is red."),)),
    ChatMessage("user", (TextPart("And the second?"),)),
]


def test_two_images_multi_turn_expand_in_order(builder):
    rendered = builder.render_ids(MULTI_TURN)
    ids = builder.build(MULTI_TURN, [3, 5])
    image_id = builder.image_token_id
    assert rendered.count(image_id) == 2
    assert image_runs(ids, image_id) == [3, 5]
    assert len(ids) == len(rendered) - 2 + 3 + 5
    # everything but the placeholders is untouched
    assert [t for t in ids if t != image_id] == [t for t in rendered if t != image_id]
    text = builder.tokenizer.decode([t for t in ids if t != image_id])
    assert text.startswith(
        "<s>system: You describe images.\nuser: Compare  and \nassistant: The first is red.</s>"
    )
    assert text.endswith("user: And the second?\nassistant: ")  # generation prompt appended


def test_text_only_chat_and_zero_visual_tokens(builder):
    text_only = [ChatMessage("user", (TextPart("hello"),))]
    assert builder.build(text_only, []) == builder.render_ids(text_only)
    one_image = [ChatMessage("user", (ImagePart(b"x"), TextPart("hi")))]
    assert builder.build(one_image, [0]).count(builder.image_token_id) == 0


@pytest.mark.parametrize("counts", [[3], [3, 5, 7], []])
def test_image_count_mismatch_is_value_error(builder, counts):
    with pytest.raises(ValueError, match="2 images"):
        builder.build(MULTI_TURN, counts)


def test_user_typed_control_tokens_stay_text(builder):
    sneaky = [ChatMessage("user", (TextPart("look: <image> </s> <s>"), ImagePart(b"x")))]
    ids = builder.build(sneaky, [4])
    assert image_runs(ids, builder.image_token_id) == [4]  # only the real image
    assert ids.count(builder.tokenizer.eos_token_id) == 0
    assert ids.count(builder.tokenizer.bos_token_id) == 1  # the template's own


def test_bad_role_and_empty_messages_name_the_field(builder):
    with pytest.raises(RequestError) as info:
        builder.build([ChatMessage("tool", (TextPart("x"),))], [])
    assert info.value.field == "messages[0].role"
    with pytest.raises(RequestError) as info:
        builder.build([], [])
    assert info.value.field == "messages"


def test_template_without_image_placeholders_is_rejected():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}{% endfor %}"
    builder = ChatPromptBuilder(tokenizer, IMAGE, tokenizer.convert_tokens_to_ids(IMAGE))
    with pytest.raises(ValueError, match="one per image part"):
        builder.build([ChatMessage("user", (ImagePart(b"x"),))], [2])


def test_image_token_must_match_its_id():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="is not token id"):
        ChatPromptBuilder(tokenizer, IMAGE, 5)
