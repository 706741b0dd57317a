"""A TCP proxy on 127.0.0.1 that forwards bytes unchanged to one upstream address and cuts
connections on purpose: the "connection dropped mid-request" fault of a real network, without
root or network namespaces.

A client must reach the broker only through the proxy, so the broker is started with
`advertised.listeners=PLAINTEXT://127.0.0.1:<proxy port>`: Metadata then sends every client
back to the proxy, and the proxy never rewrites a byte.

Cutting: while `cutting` is on, each connection is closed (both sides, with a TCP reset to
the client) once it has carried a random number of bytes from the broker to the client in
[`cut_min_bytes`, `cut_max_bytes`], or `cut_every_s` after it was opened, whichever first.
Counting the broker-to-client direction is deliberate: the broker has then handled the
request whose answer is lost, so the client's retry is a duplicate the broker must recognise.
`cuts` counts connections cut. Every thread is a daemon; `close()` ends them (bounded).
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time


class CuttingProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int = 0,
                 cut_min_bytes: int = 20_000, cut_max_bytes: int = 200_000,
                 cut_every_s: float | None = 0.5, seed: int = 5):
        self.upstream = (upstream_host, upstream_port)
        self.cut_min_bytes = cut_min_bytes
        self.cut_max_bytes = cut_max_bytes
        self.cut_every_s = cut_every_s
        self.cutting = False
        self.cuts = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._socks: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "CuttingProxy":
        self._accept_thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._accept_thread.join(timeout=5)
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            _reset(s)

    def __enter__(self) -> "CuttingProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)  # the broker is down: the client sees a refused/reset connection
                continue
            with self._lock:
                self.connections += 1
                budget = self._rng.randint(self.cut_min_bytes, self.cut_max_bytes)
                self._socks.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, budget),
                             name="proxy-conn", daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, budget: int) -> None:
        """Copies both directions until either side closes, the proxy closes, or a cut."""
        opened = time.monotonic()
        down_bytes = 0
        cut = False
        try:
            client.setblocking(True)
            upstream.setblocking(True)
            while not self._closed.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                if self.cutting and self.cut_every_s is not None and time.monotonic() - opened >= self.cut_every_s:
                    cut = True
                    break
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is upstream:
                        if self.cutting and down_bytes + len(data) >= budget:
                            # Deliver part of this answer, then drop the connection mid-response.
                            part = max(0, budget - down_bytes)
                            if part:
                                client.sendall(data[:part])
                            cut = True
                            return
                        down_bytes += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            if cut:
                with self._lock:
                    self.cuts += 1
            _reset(client)
            _reset(upstream)
            with self._lock:
                self._socks.discard(client)
                self._socks.discard(upstream)


def _reset(s: socket.socket) -> None:
    """Closes with SO_LINGER 0: an RST, as a dropped link looks to the peer once it writes."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
