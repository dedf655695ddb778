"""HTTP/1.1 over a plain socket, for what HTTP clients will not do: send a `Content-Length` and then only
part of the body, or a chunked body that never ends, and read the answer that comes meanwhile."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass

READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


def chunked(data_size: int, chunk: int = 64 * 1024) -> Iterable[bytes]:
    """`data_size` bytes of body as chunks of chunked transfer encoding, without the terminating chunk."""
    sent = 0
    while sent < data_size:
        size = min(chunk, data_size - sent)
        yield f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
        sent += size


def post(port: int, path: str, headers: dict[str, str], body: Iterable[bytes]) -> RawResponse:
    """Send the request head and the `body` pieces, then read one response (the body may be unfinished)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": "127.0.0.1", **headers}.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        for piece in body:
            sock.sendall(piece)
        return _read_response(sock)


def _read_response(sock: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += _recv(sock)
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])


def _recv(sock: socket.socket) -> bytes:
    piece = sock.recv(65536)
    if not piece:
        raise ConnectionError("the server closed the connection before a complete response")
    return piece
