"""The node's metrics export port: Prometheus scrapes the metrics table over HTTP here.

It runs in the node manager's epoll loop, not in a thread: the table is only
ever touched by the loop, and the node manager forks its workers, which must
not inherit a thread's held locks. A scrape is one short request; every GET
(any path, as prometheus_client serves) is answered with the table's text
and the connection closed. Connections that never finish their request are
bounded: past MAX_OPEN the oldest is closed.
"""
import select
import socket

from rayfast.protocol import recv_ready

MAX_REQUEST = 16 << 10      # bytes of request head read at most
MAX_OPEN = 32               # connections served at once
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _Conn:
    __slots__ = ("sock", "rbuf", "wbuf")

    def __init__(self, sock):
        self.sock = sock
        self.rbuf = b""
        self.wbuf = None            # the response, once the request is in


class MetricsHttp:
    def __init__(self, table, ep, host, port):
        """Listen on host:port (0: a free port, then in self.port); OSError if it cannot."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.listener = sock
        self.port = sock.getsockname()[1]
        self.table = table
        self.ep = ep
        self.conns = {}             # fd -> _Conn, oldest first
        self.scrapes = 0
        ep.register(sock.fileno(), _EPOLLIN)

    def on_event(self, fd, ev):
        """Handle a loop event if fd is ours; False if it is not."""
        if fd == self.listener.fileno():
            self._accept()
            return True
        c = self.conns.get(fd)
        if c is None:
            return False
        if c.wbuf is None:
            self._read(c)
        else:
            self._write(c)
        return True

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:         # out of descriptors, say: the scraper retries later
                return
            if len(self.conns) >= MAX_OPEN:
                self._close(next(iter(self.conns.values())))
            sock.setblocking(False)
            self.conns[sock.fileno()] = _Conn(sock)
            self.ep.register(sock.fileno(), _EPOLLIN)

    def _read(self, c):
        chunk = recv_ready(c.sock, MAX_REQUEST)
        if chunk is None:
            return
        if not chunk:
            self._close(c)
            return
        c.rbuf += chunk
        end = c.rbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.rbuf) > MAX_REQUEST:
                self._respond(c, b"431 Request Header Fields Too Large", b"")
            return
        method = c.rbuf.split(b" ", 1)[0]
        if method == b"GET" or method == b"HEAD":
            self.scrapes += 1
            body = self.table.text().encode()
            self._respond(c, b"200 OK", body, send_body=method == b"GET")
        else:
            self._respond(c, b"405 Method Not Allowed", b"", extra=b"Allow: GET, HEAD\r\n")

    def _respond(self, c, status, body, send_body=True, extra=b""):
        head = (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + _CONTENT_TYPE + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n" + extra + b"\r\n")
        c.wbuf = head + body if send_body else head
        c.rbuf = b""
        self.ep.modify(c.sock.fileno(), _EPOLLOUT)
        self._write(c)

    def _write(self, c):
        try:
            n = c.sock.send(c.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.wbuf = c.wbuf[n:]
        if not c.wbuf:
            self._close(c)

    def _close(self, c):
        fd = c.sock.fileno()
        self.conns.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        c.sock.close()

    def fds(self):
        return [self.listener.fileno()] + list(self.conns)

    def statistics(self):
        return {"port": self.port, "scrapes": self.scrapes, "open": len(self.conns)}

    def close(self):
        for c in list(self.conns.values()):
            self._close(c)
        try:
            self.ep.unregister(self.listener.fileno())
        except (OSError, ValueError):
            pass
        self.listener.close()
