"""Moving store objects between nodes: one TCP connection per pull, driven by the node's epoll loop.

A node that needs an object another node holds in its store (an argument of
a task forwarded to it, the result of a task it forwarded) pulls it: it
connects to the holder's peer listener, sends (PULL, oid) in one frame, and
reads back an 8-byte size and the object's bytes, exactly as they lie in the
holder's store (the serialized layout: header, pickle, aligned buffers), so
the copy is the object, whatever it holds.

Why a connection per pull rather than the link the tasks travel on: the link
carries pickled frames that the loop parses as it reads them; megabytes of
raw bytes inside that stream would be copied through pickle or make every
link reader switch modes. Here the puller creates the store object first
(`create_object`) and receives straight into it with `recv_into` on a
memoryview of the destination: the kernel copies from the socket into the
shared memory with the GIL released, and nothing else copies. The holder
sends from a pinned read-only view of its copy (`store.get`), also without a
copy of its own.

Both ends are non-blocking and owned by the node manager's loop: no thread
competing for the GIL, no call that waits. Each readiness event moves up to
BUDGET bytes, so a 100 MB transfer shares the loop with the node's other work
instead of holding it for the whole copy.
"""
import select
import socket
import struct

from rayfast import protocol as P

BUDGET = 16 << 20          # bytes a transfer moves per readiness event at most
SOCK_BUF = 4 << 20         # socket buffers: fewer wakeups per MB
_SIZE = struct.Struct("<q")
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_BROKEN = select.EPOLLERR | select.EPOLLHUP


def _tcp(sock):
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        except OSError:
            pass
    sock.setblocking(False)


class _Send:
    __slots__ = ("sock", "head", "view", "pos")

    def __init__(self, sock, head, view):
        self.sock = sock
        self.head = head
        self.view = view
        self.pos = 0


class _Pull:
    __slots__ = ("sock", "oid", "size", "buf", "request", "head", "pos", "callbacks")

    def __init__(self, sock, oid, size, buf, callback):
        self.sock = sock
        self.oid = oid
        self.size = size
        self.buf = buf
        self.request = P.encode([(P.PULL, oid)])
        self.head = b""
        self.pos = 0
        self.callbacks = [callback]


class Transfers:
    """The node's pulls in progress and the pulls it serves (fd -> transfer)."""

    def __init__(self, store, ep):
        self.store = store
        self.ep = ep
        self.by_fd = {}
        self.pulls = {}            # oid -> _Pull
        self.bytes_in = self.bytes_out = self.pulls_done = self.pulls_failed = 0

    # --- serving: another node pulls one of our objects -----------------------------
    def serve(self, sock, oid):
        """sock (taken over from the loop's clients) asked for oid: stream it back."""
        try:
            view = self.store.get(oid, 0)
            head = _SIZE.pack(len(view))
        except Exception:          # freed, never here: the puller reports the object lost
            view = None
            head = _SIZE.pack(-1)
        _tcp(sock)
        x = _Send(sock, head, view)
        self.by_fd[sock.fileno()] = x
        self.ep.register(sock.fileno(), _EPOLLOUT)
        self._send(x)

    def _send(self, x):
        try:
            if x.head:
                n = x.sock.send(x.head)
                x.head = x.head[n:]
                if x.head:
                    return
            view = x.view
            moved = 0
            while view is not None and x.pos < len(view) and moved < BUDGET:
                n = x.sock.send(view[x.pos:x.pos + BUDGET])
                x.pos += n
                moved += n
                self.bytes_out += n
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass                   # the puller is gone: it saw the connection close
        else:
            if view is not None and x.pos < len(view):
                return
        self._close(x)
        if x.view is not None:
            x.view.release()       # unpins our copy
            x.view = None

    # --- pulling: we need an object another node holds ------------------------------
    def pull(self, oid, size, address, callback):
        """Copy oid (size bytes) from the node whose peer listener is address into our store;
        callback(ok) when it is sealed here (True) or could not be had (False); with True the
        caller owns one reference to the copy (store.release gives it back). Pulls of one object
        share one transfer, each caller with a reference of its own."""
        x = self.pulls.get(oid)
        if x is not None:
            x.callbacks.append(callback)
            return
        try:
            if self.store.contains(oid):   # a copy is here already (pulled before, still pinned):
                self.store.incref(oid)     # one more reference, the caller's
                callback(True)
                return
            # (no room here for it while what is here is in use: a file of its own, as a put's)
            buf = self.store.create_object(oid, size, fallback_if_full=True)
        except Exception:
            callback(False)
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _tcp(sock)
        try:
            host, port = address.rsplit(":", 1)
            sock.connect_ex((host, int(port)))
        except (OSError, ValueError):
            pass                   # (an error shows as EPOLLERR at once)
        x = _Pull(sock, oid, size, buf, callback)
        self.pulls[oid] = x
        self.by_fd[sock.fileno()] = x
        self.ep.register(sock.fileno(), _EPOLLOUT | _EPOLLIN)

    def _receive(self, x, ev):
        sock = x.sock
        try:
            if x.request:
                if ev & _BROKEN:        # refused, or the holder is gone before it heard us
                    return self._pulled(x, False)
                if not ev & _EPOLLOUT:
                    return
                n = sock.send(x.request)
                x.request = x.request[n:]
                if x.request:
                    return
                self.ep.modify(sock.fileno(), _EPOLLIN)
            while len(x.head) < 8:
                chunk = sock.recv(8 - len(x.head))
                if not chunk:
                    return self._pulled(x, False)
                x.head += chunk
            if _SIZE.unpack(x.head)[0] != x.size:
                return self._pulled(x, False)
            buf = x.buf
            moved = 0
            while x.pos < x.size and moved < BUDGET:
                n = sock.recv_into(buf[x.pos:x.pos + BUDGET])
                if not n:
                    return self._pulled(x, False)
                x.pos += n
                moved += n
                self.bytes_in += n
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._pulled(x, False)
        if x.pos == x.size:
            self._pulled(x, True)

    def _pulled(self, x, ok):
        self._close(x)
        del self.pulls[x.oid]
        try:
            if ok:
                self.store.seal(x.oid)     # (seal or abort releases the view x.buf)
            else:
                self.store.abort(x.oid)
        except Exception:
            ok = False
        x.buf = None
        if ok:
            self.pulls_done += 1
            for _ in x.callbacks[1:]:
                self.store.incref(x.oid)   # (the first caller has the creation reference)
        else:
            self.pulls_failed += 1
        for cb in x.callbacks:
            cb(ok)

    # --- the loop's side -------------------------------------------------------------
    def on_event(self, fd, ev):
        x = self.by_fd.get(fd)
        if x is None:
            return False
        if type(x) is _Send:
            self._send(x)
        else:
            self._receive(x, ev)
        return True

    def _close(self, x):
        fd = x.sock.fileno()
        self.by_fd.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        x.sock.close()

    def fds(self):
        return list(self.by_fd)

    def statistics(self):
        return {"pulls_in_progress": len(self.pulls), "serving": len(self.by_fd) - len(self.pulls),
                "pulls_done": self.pulls_done, "pulls_failed": self.pulls_failed,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}

    def close(self):
        for x in list(self.by_fd.values()):
            if type(x) is _Pull:
                self._pulled(x, False)
            else:
                self._close(x)
                if x.view is not None:
                    x.view.release()
