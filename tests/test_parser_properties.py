"""Property tests (hypothesis) for the untrusted-input parsers `encoders.data_url` and `encoders.image_io`:
any string or bytes ends in the bytes / an RGB image or a RequestError naming the field, never in anything
else; valid PNG / JPEG files round-trip; sizes are refused before anything is decoded.

Derandomized with a fixed example budget: the same examples on every run, no deadline on a shared box.
"""

from __future__ import annotations

import base64
import io
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from encoders.data_url import decode_image_url
from encoders.image_io import load_image
from tests.test_image_io import png_header_only
from triptych.errors import RequestError

FIELD = "messages[0].content[0].image_url.url"
MAX_BYTES, MAX_PIXELS = 64 * 1024, 256 * 256
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

images = st.builds(
    lambda w, h, mode, seed: Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, size=(h, w, len(mode)), dtype=np.uint8)
        if mode != "L" else np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8), mode),
    st.integers(1, 48), st.integers(1, 48), st.sampled_from(["RGB", "RGBA", "L"]), st.integers(0, 2**32 - 1))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    (image.convert("RGB") if fmt == "JPEG" and image.mode == "RGBA" else image).save(buffer, format=fmt)
    return buffer.getvalue()


def decode_or_request_error(url):
    try:
        return decode_image_url(url, FIELD, MAX_BYTES)
    except RequestError as exc:
        assert exc.field == FIELD and exc.message
        return None


def load_or_request_error(data):
    try:
        return load_image(data, FIELD, MAX_PIXELS, MAX_BYTES)
    except RequestError as exc:
        assert exc.field == FIELD and exc.message
        return None


@PROPERTY
@given(st.one_of(st.text(), st.text().map(lambda t: "data:" + t), st.text().map(lambda t: "data:image/png;" + t),
                 st.text(alphabet="ABCD+/=", max_size=64).map(lambda t: "data:image/png;base64," + t)))
@example("data:image/png;base64,")
@example("data:image/png;base64,====")
@example("DATA:IMAGE/PNG;BASE64,AAAA")
def test_any_string_is_bytes_or_a_request_error(url):
    result = decode_or_request_error(url)
    assert result is None or isinstance(result, bytes)


@PROPERTY
@given(st.binary(min_size=1, max_size=MAX_BYTES // 4), st.sampled_from(["image/png", "image/jpeg", "image/x+y"]))
def test_base64_of_any_bytes_round_trips(data, mime):
    assert decode_image_url(f"data:{mime};base64,{base64.b64encode(data).decode()}", FIELD, MAX_BYTES) == data


@PROPERTY
@given(st.integers(MAX_BYTES + 1, 4 * MAX_BYTES), st.sampled_from("A%"))
def test_a_payload_over_the_limit_is_refused_from_its_length_alone(size, char):
    """The size comes from the length of the base64 text: neither the alphabet scan nor b64decode runs
    (a payload of '%' would fail the scan; it gets the size error)."""
    length = 4 * -(-size // 3)
    with mock.patch("encoders.data_url.base64.b64decode", side_effect=AssertionError("decoded")), \
            pytest.raises(RequestError) as info:
        decode_image_url("data:image/png;base64," + char * length, FIELD, MAX_BYTES)
    assert info.value.message == f"image in data URL is {length // 4 * 3} bytes; at most {MAX_BYTES} bytes allowed"


@PROPERTY
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\x89PNG\r\n\x1a\n")
@example(b"GIF89a")
@example(b"\xff\xd8\xff")
def test_any_bytes_are_an_image_or_a_request_error(data):
    result = load_or_request_error(data)
    assert result is None or (result.mode == "RGB" and result.size[0] * result.size[1] <= MAX_PIXELS)


@PROPERTY
@given(images, st.sampled_from(["PNG", "JPEG"]), st.data())
def test_damaged_valid_files_are_an_image_or_a_request_error(image, fmt, data):
    raw = bytearray(encoded(image, fmt))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=4))
    for index, xor in flips:
        raw[index] ^= xor
    result = load_or_request_error(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    assert result is None or result.mode == "RGB"


@PROPERTY
@given(images)
def test_png_round_trips_pixel_for_pixel(image):
    loaded = load_image(encoded(image, "PNG"), FIELD, MAX_PIXELS, MAX_BYTES)
    assert loaded.mode == "RGB" and loaded.size == image.size
    if image.mode == "RGBA":  # composited onto white
        expected = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    else:
        expected = image.convert("RGB")
    assert np.array_equal(np.asarray(loaded), np.asarray(expected))


@PROPERTY
@given(images)
def test_jpeg_round_trips_as_pillow_decodes_it(image):
    raw = encoded(image, "JPEG")
    loaded = load_image(raw, FIELD, MAX_PIXELS, MAX_BYTES)
    reference = Image.open(io.BytesIO(raw)).convert("RGB")  # Pillow's own decode of the same file
    assert loaded.mode == "RGB" and loaded.size == image.size
    assert np.array_equal(np.asarray(loaded), np.asarray(reference))


@PROPERTY
@given(st.integers(1, 2**31 - 1).flatmap(
    lambda w: st.tuples(st.just(w), st.integers(min(MAX_PIXELS // w + 1, 2**31 - 1), 2**31 - 1))))
def test_pixels_over_the_limit_are_refused_from_the_header_before_decoding(size):
    width, height = size
    with mock.patch.object(ImageFile.ImageFile, "load", autospec=True) as pixel_decode, \
            pytest.raises(RequestError) as info:
        load_image(png_header_only(width, height), FIELD, MAX_PIXELS, MAX_BYTES)
    assert f"at most {MAX_PIXELS} pixels allowed" in info.value.message
    assert not pixel_decode.called


@PROPERTY
@given(st.integers(1, 4 * MAX_BYTES))
def test_bytes_over_the_limit_are_refused_before_pillow_sees_them(extra):
    with mock.patch("encoders.image_io.Image.open", side_effect=AssertionError("opened")), \
            pytest.raises(RequestError) as info:
        load_image(b"\x89PNG" + bytes(MAX_BYTES + extra - 4), FIELD, MAX_PIXELS, MAX_BYTES)
    assert info.value.message == f"image is {MAX_BYTES + extra} bytes; at most {MAX_BYTES} bytes allowed"
