"""The benches' load-generator connection reads what a real HTTP/1.1 server writes."""

from __future__ import annotations

import asyncio
import json

from benchmarks.common import RawConnection


async def _serve(answers: list[bytes]) -> tuple[asyncio.Server, list[bytes], list[int]]:
    """A server that answers the n-th request with ``answers[n]`` (closing the connection
    after an answer that says so) and records each request and connection."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = 0
            for line in head.decode().split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            seen.append(head + await reader.readexactly(length))
            answer = answers[len(seen) - 1]
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen, connections


def test_raw_connection_reads_lengths_chunks_and_reconnects_after_close() -> None:
    body = json.dumps({"items": ["a", "b"]}).encode()
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body,
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n",
        b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ]

    async def run() -> None:
        server, seen, connections = await _serve(answers)
        port = server.sockets[0].getsockname()[1]
        conn = RawConnection(f"http://127.0.0.1:{port}", timeout=10)
        try:
            first = await conn.request("GET", "/v1/users/u1/feed?n=10")
            assert first.status_code == 200 and first.is_success
            assert first.json() == {"items": ["a", "b"]}
            second = await conn.request("POST", "/v1/events", {"events": [{"id": "e1"}]})
            assert second.status_code == 201 and second.json() == {"a": 1}
            third = await conn.request("POST", "/v1/search", {"query": "tea"})
            assert third.status_code == 422 and not third.is_success and third.text == "{}"
            fourth = await conn.request("GET", "/ready")
            assert fourth.status_code == 200 and fourth.content == b""
        finally:
            conn.close()
            server.close()
            await server.wait_closed()
        assert len(connections) == 2  # a new connection after the server closed one
        assert seen[0].startswith(b"GET /v1/users/u1/feed?n=10 HTTP/1.1\r\n")
        assert seen[1].endswith(json.dumps({"events": [{"id": "e1"}]}).encode())
        assert b"Content-Type: application/json" in seen[1]

    asyncio.run(run())
