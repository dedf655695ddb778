"""Edge validation of images: encoders.image_io.load_image and encoders.data_url.decode_image_url."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from encoders.data_url import decode_image_url
from encoders.image_io import load_image
from triptych.config import Limits
from triptych.errors import RequestError

FIELD = "messages[0].content[1].image_url"
LIMITS = Limits()  # the deployment defaults: the one place image limits are defined


def load(data: bytes, max_pixels: int = LIMITS.max_image_pixels, max_bytes: int = LIMITS.max_image_bytes):
    return load_image(data, FIELD, max_pixels, max_bytes)


def decode(url: str, max_bytes: int = LIMITS.max_image_bytes) -> bytes:
    return decode_image_url(url, FIELD, max_bytes)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(size=(64, 48), mode="RGB", seed=0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8), mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def rejects(data: bytes, *words: str, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as info:
        load(data, **kwargs)
    err = info.value
    assert err.field == FIELD
    for word in words:
        assert word.lower() in err.message.lower(), err.message
    return err


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_allowed_formats_decode_to_rgb(fmt):
    image = load(encode(noise(), fmt))
    assert image.mode == "RGB" and image.size == (64, 48)


def test_png_pixels_roundtrip():
    original = noise()
    assert np.array_equal(np.asarray(load(encode(original, "PNG"))), np.asarray(original))


def test_rgba_becomes_rgb_over_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    image = load(encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((1, 1)) == (255, 0, 0)


def test_grayscale_and_palette_become_rgb():
    assert load(encode(Image.new("L", (5, 5), 7), "PNG")).getpixel((0, 0)) == (7, 7, 7)
    palette = Image.new("RGB", (5, 5), (0, 0, 255)).convert("P")
    assert load(encode(palette, "PNG")).getpixel((2, 2)) == (0, 0, 255)


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    image = load(data)
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (255, 0, 0)


def test_empty():
    rejects(b"", "empty")


def test_too_many_bytes():
    data = encode(noise(), "PNG")
    rejects(data, "bytes", str(len(data) - 1), max_bytes=len(data) - 1)
    assert load(data, max_bytes=len(data)).size == (64, 48)


def test_not_an_image():
    err = rejects(b"hello, this is not an image at all", "not a recognised image")
    assert "PNG, JPEG, WEBP, GIF" in err.message


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO"])
def test_unsupported_format(fmt):
    err = rejects(encode(noise((16, 16)), fmt), "unsupported image format", fmt)
    assert "PNG, JPEG, WEBP, GIF" in err.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated(fmt):
    data = encode(noise((128, 128)), fmt)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    rejects(data[: len(data) // 2], "truncated or corrupt")


def test_corrupt_png_data():
    data = bytearray(encode(noise((64, 64)), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)  # inside IDAT: CRC and zlib stream now wrong
    rejects(bytes(data), "truncated or corrupt")


def test_truncated_gif():
    frames = [noise((64, 64), seed=i) for i in range(2)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    rejects(data[: len(data) // 4], "truncated or corrupt")


def test_bomb_rejected_from_header_before_decoding():
    # 3000 x 2000 = 6M pixels > default 4M, below Pillow's own limit; there are no pixels at all, so
    # a decode attempt would report truncation instead.
    rejects(png_header_only(3000, 2000), "3000x2000", "4000000", "decompression bomb")


def test_bomb_rejected_even_without_pillow_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    rejects(png_header_only(3000, 2000), "decompression bomb")


def test_huge_bomb_caught_from_pillow_error():
    rejects(png_header_only(100_000, 100_000), "decompression bomb", "4000000")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns, then we reject
def test_bomb_between_pillow_warning_and_error_limits():
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    rejects(png_header_only(10_000, 10_000), "decompression bomb")


def test_pillow_bomb_warning_as_error_is_mapped():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        rejects(png_header_only(10_000, 10_000), "decompression bomb", max_pixels=10**9)


def test_max_pixels_parameter():
    data = encode(noise((20, 20)), "PNG")
    rejects(data, "400 pixels", max_pixels=399)
    assert load(data, max_pixels=400).size == (20, 20)


def test_error_keeps_field_through_pickle():
    import pickle

    err = rejects(b"", "empty")
    again = pickle.loads(pickle.dumps(err))
    assert (again.field, again.message) == (err.field, err.message)


# ---- data URLs -----------------------------------------------------------------------------------


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def url_rejects(url, *words: str) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode(url)
    assert info.value.field == FIELD
    for word in words:
        assert word.lower() in info.value.message.lower(), info.value.message
    return info.value


def test_data_url_roundtrip_and_load():
    png = encode(noise(), "PNG")
    assert decode(data_url(png)) == png
    assert load(decode(data_url(png))).size == (64, 48)


def test_data_url_declared_type_is_not_trusted_but_must_be_image():
    png = encode(noise(), "PNG")
    assert decode(data_url(png, "image/jpeg")) == png  # load_image sniffs the real format
    assert decode("DATA:IMAGE/PNG;BASE64," + base64.b64encode(png).decode()) == png
    assert decode(data_url(png, "image/png;name=a.png")) == png
    url_rejects(data_url(png, "text/plain"), "malformed")


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "https://example.com/cat.png", " HTTPS://x/y"])
def test_remote_urls_are_not_fetched(url):
    url_rejects(url, "not fetched", "data:image/png;base64,")


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd", "cat.png", ""])
def test_other_schemes_rejected(url):
    url_rejects(url, "only data: urls")


def test_non_string_rejected():
    url_rejects(b"data:image/png;base64,AAAA", "expected a string")


@pytest.mark.parametrize(
    "payload",
    ["AAA", "AA=A", "AAAA====", "AA AA", "AAAA\n", "AB$D", "A-_B", "AAAAA==="],
    ids=["short", "pad-mid", "too-much-pad", "space", "newline", "symbol", "urlsafe", "bad-len"],
)
def test_invalid_base64(payload):
    url_rejects("data:image/png;base64," + payload, "base64")


def test_malformed_data_urls():
    url_rejects("data:image/png,rawbytes", "malformed")  # not base64
    url_rejects("data:;base64,AAAA", "malformed")
    url_rejects("data:image/png;base64,", "empty")


@pytest.mark.parametrize("size", [6, 7, 8], ids=["no-pad", "pad-2", "pad-1"])
def test_data_url_size_limit_is_exact_at_every_padding(size):
    data = bytes(range(size))
    assert decode(data_url(data), max_bytes=size) == data  # just inside
    with pytest.raises(RequestError, match=f"is {size} bytes; at most {size - 1} bytes allowed"):
        decode(data_url(data), max_bytes=size - 1)  # just outside


def test_oversized_data_url_is_rejected_before_decoding(monkeypatch):
    import encoders.data_url

    def no_decode(*args, **kwargs):
        raise AssertionError("the payload was decoded")

    monkeypatch.setattr(encoders.data_url.base64, "b64decode", no_decode)
    url = "data:image/png;base64," + "A" * 4_000_000  # 3,000,000 bytes once decoded
    with pytest.raises(RequestError, match="is 3000000 bytes; at most 2999999 bytes allowed"):
        decode(url, max_bytes=2_999_999)


def test_edge_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, encoders.image_io, encoders.data_url; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
