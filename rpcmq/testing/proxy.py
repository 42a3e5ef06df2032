"""A TCP proxy that tests can cut and restore, to simulate a lost broker.

    with TcpProxy('127.0.0.1', 5672) as proxy:
        url = 'rabbit://guest:guest@127.0.0.1:%d/' % proxy.port
        ...
        proxy.cut()       # close every connection, refuse new ones
        proxy.restore()   # accept connections again, on the same port
"""

import selectors
import socket
import threading

__all__ = ['TcpProxy']


class TcpProxy:

    def __init__(self, upstream_host, upstream_port, host='127.0.0.1'):
        self.upstream = (upstream_host, upstream_port)
        self._listen = socket.create_server((host, 0))
        self.host, self.port = self._listen.getsockname()[:2]
        self._lock = threading.Lock()
        self._pairs = []
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self.connections = 0

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listen.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream),
                             daemon=True).start()

    def _pump(self, a, b):
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(timeout=1.0):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        """Drop every open connection and refuse new ones until restore()."""
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def restore(self):
        self._open.set()

    def close(self):
        self._closed = True
        self.cut()
        self._listen.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()
