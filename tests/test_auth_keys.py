"""API keys without Serve: where they come from (`TRIPTYCH_API_KEYS`, `auth.api_keys_file`), what is
refused with a named error, and how one is checked (`triptych.auth`)."""

from __future__ import annotations

import pytest

from triptych.auth import API_KEYS_ENV, ApiKeys, bearer_token, load_api_keys
from triptych.config import ConfigError, TriptychConfig


def test_no_source_means_auth_is_off():
    keys = load_api_keys(None, environ={})
    assert not keys.enabled and keys.authorizes(None) and keys.authorizes("Bearer anything")


def test_keys_from_the_environment_and_a_file_are_both_accepted(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# operators\nfile-key-1\n\n  file-key-2  \n")
    keys = load_api_keys(path, environ={API_KEYS_ENV: " env-key-1, ,env-key-2,"})
    assert keys.enabled
    for key in ("env-key-1", "env-key-2", "file-key-1", "file-key-2"):
        assert keys.accepts(key) and keys.authorizes(f"Bearer {key}") and keys.authorizes(f"bearer  {key}")
    for wrong in ("env-key-3", "env-key-1 ", "", "# operators", "ENV-KEY-1", "file-key"):
        assert not keys.accepts(wrong)
    assert not keys.authorizes(None) and not keys.authorizes("env-key-1")  # no Bearer scheme
    assert not keys.authorizes("Basic env-key-1") and not keys.authorizes("Bearer ")


def test_repr_and_config_never_show_a_key(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("secret-in-file\n")
    keys = load_api_keys(path, environ={API_KEYS_ENV: "secret-in-env"})
    shown = repr(keys) + str(keys) + repr(TriptychConfig(auth={"api_keys_file": path}))
    assert "secret-in-file" not in shown and "secret-in-env" not in shown
    assert "1 from TRIPTYCH_API_KEYS" in repr(keys) and f"1 from {path}" in repr(keys)
    assert all(len(d) == 32 for d in keys.digests)  # only SHA-256 digests are kept


def test_every_key_is_compared(monkeypatch):
    """The check runs compare_digest against every key, even after a match (no early exit)."""
    from triptych import auth

    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    keys = load_api_keys(None, environ={API_KEYS_ENV: "a1,b2,c3,d4"})
    assert keys.accepts("a1") and len(calls) == 4
    assert not keys.accepts("zz") and len(calls) == 8


@pytest.mark.parametrize("text, problem", [
    ("", "no keys in the file"),
    ("# only a comment\n\n", "no keys in the file"),
    ("good-key\nbad key\n", "line 2: a key must be printable ASCII without spaces"),
    ("ok\n# c\nkey\twith-tab\n", "line 3: a key must be printable ASCII without spaces"),
    ("ключ\n", "line 1: a key must be printable ASCII"),
])
def test_a_bad_key_file_is_a_named_error(tmp_path, text, problem):
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_api_keys(path, environ={})
    assert str(path) in str(info.value) and problem in str(info.value)
    assert "good-key" not in str(info.value) and "bad key" not in str(info.value)


def test_a_missing_key_file_is_a_named_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_api_keys(tmp_path / "nope.txt", environ={})
    assert "auth.api_keys_file: cannot read the file: No such file or directory" in str(info.value)
    assert str(tmp_path / "nope.txt") in str(info.value)


@pytest.mark.parametrize("value, problem", [
    (",,,", "set but holds no key"),
    ("good,has space", "item 2: a key must be printable ASCII without spaces"),
])
def test_a_bad_environment_variable_is_a_named_error(value, problem):
    with pytest.raises(ConfigError) as info:
        load_api_keys(None, environ={API_KEYS_ENV: value})
    assert API_KEYS_ENV in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize("header, token", [
    (None, None), ("", None), ("Bearer", None), ("Bearer   ", None), ("Token abc", None),
    ("Bearer abc", "abc"), ("BEARER abc ", "abc"), ("bearer a.b-c_d", "a.b-c_d"),
])
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_auth_section_of_the_config():
    assert TriptychConfig().auth.api_keys_file is None
    assert ApiKeys().enabled is False
