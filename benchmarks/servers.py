"""Servers measured by the suite, each run on the loop under test.

    python servers.py --loop SPEC --kind KIND [--host 127.0.0.1] [--port 0]

KIND is one of
  sock      TCP echo written with loop.sock_accept / sock_recv / sock_sendall
  streams   TCP echo written with asyncio.start_server (StreamReader / StreamWriter)
  protocol  TCP echo written as an asyncio.Protocol (data_received -> transport.write)
  http      HTTP/1.1 keep-alive server: httptools parser in an asyncio.Protocol
  udp       UDP echo, an asyncio.DatagramProtocol
  tls-protocol  the Protocol echo server with ssl= (TLS, certificate from tests/certs/)
  tls-http      the httptools HTTP server with ssl=

Once listening, the server prints ``READY <port>`` on stdout and serves until killed.
Reads are up to 256 KiB at a time, the same for every style and for the native ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import loops

READ_SIZE = 256 * 1024
BACKLOG = 4096  # the memory case opens 10,000 connections as fast as it can


def ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


# --- loop.sock_* --------------------------------------------------------------------------


async def sock_echo(loop, conn: socket.socket) -> None:
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except OSError:
        pass
    finally:
        conn.close()


async def serve_sock(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(BACKLOG)
    lsock.setblocking(False)
    ready(lsock.getsockname()[1])
    tasks = set()
    while True:
        conn, _ = await loop.sock_accept(lsock)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = loop.create_task(sock_echo(loop, conn))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


# --- streams ------------------------------------------------------------------------------


async def streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve_streams(host: str, port: int) -> None:
    server = await asyncio.start_server(streams_echo, host, port, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


# --- Protocol -----------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


async def serve_protocol(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


# --- HTTP (httptools) ---------------------------------------------------------------------

BODY = b"Hello, World!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Server: oxloop-bench\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    def __init__(self):
        import httptools

        self._httptools = httptools
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except self._httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(BAD_REQUEST)
                self.transport.close()

    # httptools callbacks
    def on_url(self, url):
        self.url = url

    def on_message_complete(self):
        t = self.transport
        if t is None:
            return
        t.write(RESPONSE)
        if not self.parser.should_keep_alive():
            t.close()


async def serve_http(host: str, port: int) -> None:
    import httptools  # noqa: F401  (fail before READY if it is missing)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(HttpProtocol, host, port, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


# --- UDP ----------------------------------------------------------------------------------


class UdpEcho(asyncio.DatagramProtocol):
    transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        pass


async def serve_udp(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=(host, port))
    ready(transport.get_extra_info("sockname")[1])
    await asyncio.Event().wait()


# --- TLS (ssl=) ---------------------------------------------------------------------------

CERTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "certs")


def server_ssl_context():
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"))
    return ctx


async def serve_tls(factory, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(factory, host, port, backlog=BACKLOG, ssl=server_ssl_context())
    except NotImplementedError as exc:  # a loop without TLS support (rloop)
        sys.stderr.write(f"n/a: this loop has no TLS support (create_server(ssl=...) raised NotImplementedError {exc})\n")
        sys.stderr.flush()
        os._exit(3)  # not SystemExit: its traceback would hide the message from the driver
    ready(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


async def serve_tls_protocol(host: str, port: int) -> None:
    await serve_tls(EchoProtocol, host, port)


async def serve_tls_http(host: str, port: int) -> None:
    import httptools  # noqa: F401  (fail before READY if it is missing)

    await serve_tls(HttpProtocol, host, port)


KINDS = {
    "sock": serve_sock,
    "streams": serve_streams,
    "protocol": serve_protocol,
    "http": serve_http,
    "udp": serve_udp,
    "tls-protocol": serve_tls_protocol,
    "tls-http": serve_tls_http,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="asyncio:new_event_loop", help="module:factory")
    ap.add_argument("--kind", choices=sorted(KINDS), required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    loop = loops.resolve(args.loop)()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(KINDS[args.kind](args.host, args.port))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    main()
