"""Triptych's chat format: the special tokens and the chat template of the tokenizers made here.

Every checkpoint this repository writes (``models.tiny``, ``models.bench``, the toy models) saves a
tokenizer (trained by ``models.tokenizer_training``) that carries this template, and its
``LlavaProcessor`` where there is one. The template renders OpenAI-style messages (content a string
or a list of ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` parts) as::

    <s>user:<image> what colour is the square?</s>assistant: red</s>

and ends with ``assistant:`` when ``add_generation_prompt`` is true. The template emits ``<s>``
itself, so encode rendered prompts with ``add_special_tokens=False``. ``<image>`` is a special token,
so it is never split. Loading a checkpoint's tokenizer is ``models.load_chat_tokenizer``.
"""

from __future__ import annotations

BOS, EOS, PAD, UNK, IMAGE = "<s>", "</s>", "<pad>", "<unk>", "<image>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD, IMAGE]  # ids 0..4 in this order

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}:"
    "{% if message['content'] is string %}"
    "{{ ' ' + message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ ' ' + part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
