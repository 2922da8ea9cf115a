"""A small TCP fault proxy for tests: put it between a service and one of its
dependencies, then make that dependency go away without touching the shared
server.

    proxy = FaultProxy(("127.0.0.1", 6379)).start()
    ... point the service at 127.0.0.1:proxy.port ...
    proxy.cut()        # connections reset, new ones too
    proxy.blackhole()  # connections accepted, nothing ever answers
    proxy.drop_replies()  # requests arrive, answers are lost on the way back
    proxy.restore()    # traffic flows again
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Self


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._mode = "up"
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._listen()
        return self

    def cut(self) -> None:
        """Resets every connection, and every new one as soon as it is made."""
        with self._lock:
            self._mode = "down"
        self._drop_connections()

    def blackhole(self) -> None:
        """Accepts connections but forwards nothing: a peer that hangs."""
        with self._lock:
            self._mode = "blackhole"

    def drop_replies(self) -> None:
        """Forwards what the client sends, swallows what the server answers."""
        with self._lock:
            self._mode = "oneway"

    def restore(self) -> None:
        with self._lock:
            self._mode = "up"
        self._drop_connections()  # blackholed connections are useless now

    def close(self) -> None:
        self.cut()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener:
            listener.close()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed by cut()
            if self._mode == "down":
                # Reset at once (SO_LINGER 0), as a dead peer's host would.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            if self._mode == "blackhole":
                self._track(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._track(client, server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        pair = {client: server, server: client}
        try:
            while self._mode != "down":
                readable, _, _ = select.select(list(pair), [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    if self._mode == "up" or (self._mode == "oneway" and source is client):
                        pair[source].sendall(data)  # else swallowed
        except (OSError, ValueError):  # ValueError: the socket was closed under select()
            return
        finally:
            for sock in pair:
                self._untrack(sock)

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.update(socks)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _drop_connections(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
