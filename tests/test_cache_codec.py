"""cache.codec: exact round trips for every supported dtype and shape; every malformed blob is a CodecError."""

from __future__ import annotations

import struct

import pytest
import torch

from cache.codec import FORMAT_VERSION, MAGIC, SUPPORTED_DTYPES, CodecError, decode_tensors, encode_tensors

SHAPES = [(), (0,), (3, 0, 2), (7,), (2, 3), (1, 2, 3, 4)]
REQUIRED_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool]


def _sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 100).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=dtype)


def test_required_dtypes_supported():
    assert set(REQUIRED_DTYPES) <= set(SUPPORTED_DTYPES)


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_is_exact(dtype, shape):
    original = _sample(dtype, shape)
    out = decode_tensors(encode_tensors({"x": original}))
    assert list(out) == ["x"]
    assert out["x"].dtype == dtype
    assert out["x"].shape == original.shape
    assert torch.equal(out["x"], original)


def test_several_tensors_keep_names_and_order():
    tensors = {
        "tokens": torch.randn(5, 8, dtype=torch.float16),
        "cls_attention": torch.rand(5),
        "grid_hw": torch.tensor([2, 3]),
        "naïve/名前": torch.tensor(True),
    }
    out = decode_tensors(encode_tensors(tensors))
    assert list(out) == list(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(out[name], tensor)


def test_non_contiguous_and_grad_inputs():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    transposed = base.t()  # (4, 3) non-contiguous view
    leaf = torch.ones(2, requires_grad=True)
    out = decode_tensors(encode_tensors({"t": transposed, "g": leaf}))
    assert torch.equal(out["t"], transposed)
    assert torch.equal(out["g"], leaf.detach())
    assert not out["g"].requires_grad


def test_decoded_tensors_own_writable_memory():
    blob = bytearray(encode_tensors({"x": torch.zeros(4)}))
    out = decode_tensors(blob)
    out["x"] += 1  # must not raise (writable) ...
    blob[-4:] = b"\xff\xff\xff\xff"  # ... and must not alias the blob
    assert torch.equal(out["x"], torch.ones(4))


def test_empty_dict_round_trips():
    assert decode_tensors(encode_tensors({})) == {}


def test_header_layout():
    blob = encode_tensors({"a": torch.zeros(2, dtype=torch.int32)})
    assert blob[:4] == MAGIC
    assert struct.unpack_from("<HI", blob, 4) == (FORMAT_VERSION, 1)


@pytest.mark.parametrize(
    "value, message",
    [
        ({"c": torch.zeros(2, dtype=torch.complex64)}, "unsupported dtype"),
        ({"l": [1.0, 2.0]}, "torch.Tensor"),
        ({3: torch.zeros(1)}, "name must be str"),
    ],
)
def test_encode_rejects_unsupported(value, message):
    with pytest.raises(CodecError, match=message):
        encode_tensors(value)


def _blob() -> bytes:
    return encode_tensors(
        {"a": torch.arange(6, dtype=torch.int32).reshape(2, 3), "b": torch.tensor([True, False])}
    )


def test_every_truncation_is_rejected():
    blob = _blob()
    for cut in range(len(blob)):
        with pytest.raises(CodecError):
            decode_tensors(blob[:cut])


def _one_tensor_blob(
    *, name=b"a", code=6, shape=(2,), nbytes=8, data=b"\x00" * 8, count=1, version=FORMAT_VERSION
):
    header = struct.pack("<4sHI", MAGIC, version, count)
    body = struct.pack("<H", len(name)) + name + struct.pack("<BB", code, len(shape))
    body += b"".join(struct.pack("<Q", s) for s in shape) + struct.pack("<Q", nbytes) + data
    return header + body


def test_hand_built_blob_is_valid():
    # Guards the corruption cases below: they differ from a valid blob in one field only.
    assert torch.equal(decode_tensors(_one_tensor_blob())["a"], torch.zeros(2, dtype=torch.int32))


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "truncated"),
        (b"NOPE" + _blob()[4:], "bad magic"),
        (_one_tensor_blob(version=FORMAT_VERSION + 1), "format version"),
        (_one_tensor_blob() + b"\x00", "trailing"),
        (_one_tensor_blob(code=200), "unknown dtype"),
        (_one_tensor_blob(nbytes=4, data=b"\x00" * 4), "nbytes"),
        (_one_tensor_blob(shape=(2**40, 2**40), nbytes=8), "nbytes"),
        (_one_tensor_blob(count=2), "truncated"),
        (_one_tensor_blob(name=b"\xff\xfe"), "utf-8"),
        (_one_tensor_blob(code=10, shape=(2,), nbytes=2, data=b"\x01\x02"), "bool"),
        (_one_tensor_blob(count=2) + _one_tensor_blob()[10:], "duplicate"),
    ],
    ids=[
        "empty",
        "magic",
        "version",
        "trailing",
        "dtype",
        "nbytes",
        "huge-shape",
        "count",
        "name",
        "bool",
        "dup",
    ],
)
def test_malformed_blobs_raise_codec_error(blob, message):
    with pytest.raises(CodecError, match=message):
        decode_tensors(blob)


def test_non_bytes_input_is_codec_error():
    with pytest.raises(CodecError):
        decode_tensors("TRPT")  # type: ignore[arg-type]


def test_codec_error_is_value_error():
    assert issubclass(CodecError, ValueError)
