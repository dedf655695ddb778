"""Decode untrusted image bytes into an RGB PIL image, or fail with a RequestError that names the field.

This file owns edge validation of images: size limits on the bytes, the allowed container formats,
a decompression-bomb check on the header before any pixel is decoded, and a forced full decode so
truncated or corrupt files are rejected here instead of deep inside a stage.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFile, UnidentifiedImageError

from triptych.errors import RequestError

# Pillow format name -> the name we show users. MPO is what Pillow calls a JPEG with a
# multi-picture extension (most phone cameras); it decodes as its first (primary) picture.
ALLOWED_FORMATS: dict[str, str] = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "GIF": "GIF"}
ALLOWED_TEXT = "PNG, JPEG, WEBP, GIF (first frame)"


def load_image(data: bytes, field: str, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode ``data`` (an image file's bytes) into a fully loaded RGB image.

    ``max_pixels`` and ``max_bytes`` are the deployment's ``Limits.max_image_pixels`` and
    ``Limits.max_image_bytes`` (``triptych.config``, the one place the limits are defined).

    Allowed formats: PNG, JPEG, WEBP, GIF (the first frame is used). Images with an alpha channel
    are composited onto white. Raises ``RequestError(field, ...)`` for: empty input, more than
    ``max_bytes`` bytes, bytes that are not an image, a format that is not allowed, a header whose
    width*height exceeds ``max_pixels`` (checked before decoding pixels), and truncated or corrupt
    files (the whole image is decoded here; truncated images are never padded).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RequestError(field, f"expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise RequestError(field, f"image is empty (0 bytes); send a non-empty {ALLOWED_TEXT} file")
    if len(data) > max_bytes:
        raise RequestError(
            field,
            f"image is {len(data)} bytes; at most {max_bytes} bytes allowed",
        )
    # Truncated files must fail, never be silently padded with grey.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")

    # Our own header check (max_pixels) is the authoritative bomb guard. Pillow's global check also
    # runs inside Image.open: its DecompressionBombError (and its Warning, where warning filters make
    # it an error) is mapped too. warnings.catch_warnings() is not used: it is not thread-safe.
    image = _open_header(data, field, max_pixels)
    try:
        _full_decode(image, data, field, max_pixels)
        return _to_rgb(image)
    finally:
        image.close()


def _open_header(data: bytes, field: str, max_pixels: int) -> ImageFile.ImageFile:
    """Identify the format and read the header only (no pixel data); enforce format and size limits."""
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(field, _bomb_message(e, max_pixels)) from None
    except UnidentifiedImageError:
        raise RequestError(
            field, f"data is not a recognised image; allowed formats: {ALLOWED_TEXT}"
        ) from None
    # Untrusted bytes reach plugin parsers that raise many types; every one is a bad request.
    except Exception as e:  # noqa: BLE001 - a format Pillow recognised but whose header it could not parse
        raise RequestError(
            field, f"image is truncated or corrupt ({e}); send a complete {ALLOWED_TEXT} file"
        ) from None

    if image.format not in ALLOWED_FORMATS:
        fmt = image.format
        image.close()
        raise RequestError(field, f"unsupported image format {fmt}; allowed formats: {ALLOWED_TEXT}")
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise RequestError(field, f"image has invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        image.close()
        raise RequestError(
            field,
            f"image is {width}x{height} = {width * height} pixels; at most {max_pixels} pixels allowed "
            "(rejected before decoding as a possible decompression bomb)",
        )
    return image


def _full_decode(image: ImageFile.ImageFile, data: bytes, field: str, max_pixels: int) -> None:
    """Decode every pixel of the current (first) frame; map any decoder failure to a RequestError."""
    fmt = ALLOWED_FORMATS[image.format]
    try:
        if image.format == "PNG":
            # verify() checks chunk CRCs; it invalidates the image object, so re-open to load.
            probe = Image.open(io.BytesIO(data))
            probe.verify()
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(field, _bomb_message(e, max_pixels)) from None
    except Exception as e:  # noqa: BLE001 - OSError "image file is truncated", SyntaxError "broken PNG", zlib...
        raise RequestError(
            field, f"{fmt} image is truncated or corrupt ({e}); send a complete file"
        ) from None


def _bomb_message(error: Exception, max_pixels: int) -> str:
    return f"image dimensions too large (possible decompression bomb: {error}); at most {max_pixels} pixels allowed"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB copy; alpha (RGBA, LA, palette transparency) is composited onto white."""
    if image.mode == "RGB":
        return image.copy()
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
