"""Binary codec for cache values: a dict of named tensors <-> bytes, without pickle.

Layout (all integers little-endian)::

    magic    4s   b"TRPT"
    version  u16  FORMAT_VERSION
    count    u32  number of tensors
    then `count` times:
      name_len u16, name (utf-8, name_len bytes)
      dtype    u8   code from _DTYPE_CODES
      ndim     u8
      shape    ndim x u64
      nbytes   u64  == prod(shape) * itemsize
      data     nbytes raw bytes of the C-contiguous CPU tensor

Nothing may follow the last tensor. Any blob that does not match this layout exactly raises
`CodecError`; the embedding cache treats that as a miss, so a corrupt or stale entry can never
reach a model. Raw bytes are written in host byte order, which is little-endian on every platform
this project targets (asserted at import).
"""

from __future__ import annotations

import math
import struct
import sys

import torch

MAGIC = b"TRPT"
FORMAT_VERSION = 1

# Codes are part of the wire format: never renumber, only append.
_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.float64: 4,
    torch.int64: 5,
    torch.int32: 6,
    torch.int16: 7,
    torch.int8: 8,
    torch.uint8: 9,
    torch.bool: 10,
}
_CODE_DTYPES: dict[int, torch.dtype] = {code: dtype for dtype, code in _DTYPE_CODES.items()}

_HEADER = struct.Struct("<4sHI")  # magic, version, count
_U16 = struct.Struct("<H")
_U8U8 = struct.Struct("<BB")  # dtype code, ndim
_U64 = struct.Struct("<Q")

assert sys.byteorder == "little", "cache.codec writes host-order tensor bytes and assumes little-endian"

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = tuple(_DTYPE_CODES)


class CodecError(ValueError):
    """A blob is not a valid encoded tensor dict, or a value cannot be encoded."""


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialize named tensors (any device; copied to CPU, made contiguous) into one blob.

    Raises `CodecError` for a non-tensor value, a non-str or over-long name, or an unsupported dtype
    (see `SUPPORTED_DTYPES`).
    """
    parts: list[bytes] = [_HEADER.pack(MAGIC, FORMAT_VERSION, len(tensors))]
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise CodecError(f"tensor name must be str, got {type(name).__name__}")
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(f"value for {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
        code = _DTYPE_CODES.get(tensor.dtype)
        if code is None:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
            raise CodecError(f"tensor {name!r} has unsupported dtype {tensor.dtype}; allowed: {allowed}")
        name_bytes = name.encode("utf-8")
        if len(name_bytes) > 0xFFFF:
            raise CodecError(f"tensor name too long ({len(name_bytes)} bytes, max 65535)")
        if tensor.dim() > 0xFF:
            raise CodecError(f"tensor {name!r} has too many dims ({tensor.dim()}, max 255)")
        # Flatten first: .view(uint8) on a 0-d tensor with itemsize > 1 is not allowed.
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        parts.append(_U16.pack(len(name_bytes)))
        parts.append(name_bytes)
        parts.append(_U8U8.pack(code, tensor.dim()))
        parts.extend(_U64.pack(size) for size in tensor.shape)
        parts.append(_U64.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    """Parse a blob made by `encode_tensors` into new CPU tensors (they do not share `blob`'s memory).

    Raises `CodecError` for a wrong magic, an unknown format version, a truncated or over-long blob,
    an unknown dtype code, a size mismatch, duplicate names, or invalid bool bytes.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CodecError(f"blob must be bytes, got {type(blob).__name__}")
    view = memoryview(blob).cast("B")
    reader = _Reader(view)
    magic, version, count = reader.unpack(_HEADER, "header")
    if magic != MAGIC:
        raise CodecError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version}, this build reads {FORMAT_VERSION}")
    out: dict[str, torch.Tensor] = {}
    for index in range(count):
        (name_len,) = reader.unpack(_U16, f"tensor {index} name length")
        try:
            name = bytes(reader.take(name_len, f"tensor {index} name")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"tensor {index} name is not valid utf-8") from exc
        if name in out:
            raise CodecError(f"duplicate tensor name {name!r}")
        code, ndim = reader.unpack(_U8U8, f"tensor {name!r} dtype/ndim")
        dtype = _CODE_DTYPES.get(code)
        if dtype is None:
            raise CodecError(f"tensor {name!r} has unknown dtype code {code}")
        shape = tuple(reader.unpack(_U64, f"tensor {name!r} shape")[0] for _ in range(ndim))
        (nbytes,) = reader.unpack(_U64, f"tensor {name!r} nbytes")
        itemsize = torch.empty((), dtype=dtype).element_size()
        expected = math.prod(shape) * itemsize
        if nbytes != expected:
            raise CodecError(f"tensor {name!r}: nbytes {nbytes} != prod{shape} * {itemsize} = {expected}")
        data = reader.take(nbytes, f"tensor {name!r} data")
        out[name] = _tensor_from_bytes(name, data, dtype, shape)
    if reader.remaining:
        raise CodecError(f"{reader.remaining} trailing bytes after the last tensor")
    return out


def _tensor_from_bytes(
    name: str, data: memoryview, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    if len(data) == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # one copy: owned and writable
    if dtype == torch.bool and int(raw.max()) > 1:
        raise CodecError(f"tensor {name!r}: bool data holds bytes other than 0 and 1")
    return raw.view(dtype).reshape(shape)


class _Reader:
    """Cursor over a byte view that raises CodecError instead of reading past the end."""

    def __init__(self, view: memoryview):
        self._view = view
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._view) - self._pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining:
            raise CodecError(f"blob truncated reading {what}: need {n} bytes, {self.remaining} left")
        chunk = self._view[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))
