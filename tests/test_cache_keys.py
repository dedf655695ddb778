"""cache.keys: keys are stable, versioned, and change when any component changes."""

from __future__ import annotations

import hashlib

import pytest

from cache.keys import KEY_PREFIX, cache_key, text_payload

BASE = {
    "stage": "vision",
    "model_id": "ViT-B-32",
    "revision": "random-seed0",
    "preprocess": {"image_size": 224, "mean": [0.48, 0.46, 0.41], "resize": "bicubic"},
    "payload": b"\x89PNG fake image bytes",
}


def test_key_layout():
    key = cache_key(**BASE)
    prefix, version, stage, model_rev, pre_hash, payload_hash = key.split(":")
    assert f"{prefix}:{version}" == KEY_PREFIX == "triptych:v1"
    assert stage == "vision"
    assert model_rev == "ViT-B-32@random-seed0"
    assert len(pre_hash) == 16 and int(pre_hash, 16) >= 0
    assert payload_hash == hashlib.sha256(BASE["payload"]).hexdigest()


def test_key_is_stable_across_calls_and_processes():
    # Golden value: a change here means every deployed cache entry is orphaned; bump KEY_VERSION instead.
    assert cache_key(**BASE) == cache_key(**dict(BASE))
    assert cache_key(**BASE) == (
        "triptych:v1:vision:ViT-B-32@random-seed0:"
        + hashlib.sha256(b'{"image_size":224,"mean":[0.48,0.46,0.41],"resize":"bicubic"}').hexdigest()[:16]
        + ":"
        + hashlib.sha256(b"\x89PNG fake image bytes").hexdigest()
    )


def test_preprocess_key_order_does_not_matter():
    reordered = dict(reversed(list(BASE["preprocess"].items())))
    assert cache_key(**{**BASE, "preprocess": reordered}) == cache_key(**BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "text"},
        {"model_id": "ViT-L-14"},
        {"revision": "random-seed1"},
        {"preprocess": {**BASE["preprocess"], "image_size": 336}},
        {"preprocess": {**BASE["preprocess"], "extra": None}},
        {"preprocess": {}},
        {"payload": BASE["payload"] + b"\x00"},
        {"payload": b""},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_component_change_changes_the_key(change):
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)


def test_separators_inside_components_cannot_collide():
    a = cache_key(**{**BASE, "stage": "a:b", "model_id": "c"})
    b = cache_key(**{**BASE, "stage": "a", "model_id": "b:c"})
    c = cache_key(**{**BASE, "model_id": "m@x", "revision": "y"})
    d = cache_key(**{**BASE, "model_id": "m", "revision": "x@y"})
    assert a != b and c != d
    assert len(a.split(":")) == 6  # the separators were escaped


def test_model_paths_are_kept_readable():
    key = cache_key(**{**BASE, "model_id": "/models/toy/clip-vit"})
    assert ":/models/toy/clip-vit@random-seed0:" in key


@pytest.mark.parametrize("arg", ["stage", "model_id", "revision"])
def test_empty_identity_is_rejected(arg):
    with pytest.raises(ValueError, match=arg):
        cache_key(**{**BASE, arg: ""})


def test_payload_must_be_bytes():
    with pytest.raises(TypeError, match="payload"):
        cache_key(**{**BASE, "payload": "text"})


def test_preprocess_must_be_json():
    with pytest.raises(TypeError):
        cache_key(**{**BASE, "preprocess": {"fn": object()}})
    with pytest.raises(ValueError):
        cache_key(**{**BASE, "preprocess": {"x": float("nan")}})


def test_text_payload_separates_tokenizer_and_text():
    assert text_payload("ab", "tok") != text_payload("b", "toka")
    assert text_payload("hello", "gpt2") == text_payload("hello", "gpt2")
    assert text_payload("hello", "gpt2") != text_payload("hello ", "gpt2")
