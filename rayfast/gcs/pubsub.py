"""GCS pub/sub: a channel lives on the shard of its name (`shard_for`).

`Subscriber` keeps one connection per shard and one background thread that
selects over all of them and delivers each message to `callback(channel,
message)` (or to a queue read with `get_message()` when no callback is
given).  A channel is SUBSCRIBEd only on the shard it is published to (the
same hash the publisher uses), which is equivalent to subscribing on every
shard but sends each shard only its own channels; patterns (PSUBSCRIBE) go
to every shard.  `subscribe()` returns once the server confirmed, so a
message published after it returns is delivered.

A broken subscriber connection is reopened (with backoff) and its channels
re-subscribed; messages published meanwhile are lost (pub/sub is
fire-and-forget: state lives in the tables, notices are only hints).
"""
from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

import hiredis

from .client import _Conn, pack_command, shard_for

logger = logging.getLogger(__name__)


def _b(x) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


class Subscriber:
    def __init__(self, addresses: Sequence[str], channels: Iterable = (),
                 callback: Optional[Callable[[str, bytes], None]] = None,
                 patterns: Iterable = (), connect_timeout: float = 5.0,
                 confirm_timeout: float = 5.0):
        if isinstance(addresses, str):
            addresses = [addresses]
        self.addresses = list(addresses)
        self.num_shards = len(self.addresses)
        self.callback = callback
        self.confirm_timeout = confirm_timeout
        self._queue: "queue.Queue" = queue.Queue()
        self._conns = [_Conn(a, None, connect_timeout) for a in self.addresses]
        self._send_lock = threading.Lock()
        self._channels: List[Set[bytes]] = [set() for _ in self.addresses]
        self._patterns: Set[bytes] = set()
        self._cond = threading.Condition()
        self._confirmed: Dict[tuple, int] = {}  # (shard, kind, name) -> confirmations seen
        self._closed = False
        self.messages_received = 0
        self.callback_errors = 0
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        for i, c in enumerate(self._conns):
            try:
                c.connect()
            except OSError as e:
                self._close_all()
                raise ConnectionError(f"Subscriber: cannot connect to GCS shard {i} at {c.address!r}: {e}") from e
            self._sel.register(c.sock, selectors.EVENT_READ, i)
        self._thread = threading.Thread(target=self._run, name="rayfast-gcs-subscriber", daemon=True)
        self._thread.start()
        chans = list(channels)
        if chans:
            self.subscribe(*chans)
        pats = list(patterns)
        if pats:
            self.psubscribe(*pats)

    # ------------------------------------------------------------------ API

    def shard_of(self, channel) -> int:
        return shard_for(_b(channel), self.num_shards)

    def subscribe(self, *channels, wait: bool = True) -> None:
        by_shard: Dict[int, List[bytes]] = {}
        for ch in channels:
            ch = _b(ch)
            by_shard.setdefault(self.shard_of(ch), []).append(ch)
        self._send_many("SUBSCRIBE", b"subscribe", by_shard, wait, add=True)

    def unsubscribe(self, *channels, wait: bool = True) -> None:
        by_shard: Dict[int, List[bytes]] = {}
        for ch in channels:
            ch = _b(ch)
            by_shard.setdefault(self.shard_of(ch), []).append(ch)
        self._send_many("UNSUBSCRIBE", b"unsubscribe", by_shard, wait, add=False)

    def psubscribe(self, *patterns, wait: bool = True) -> None:
        pats = [_b(p) for p in patterns]
        self._patterns.update(pats)
        self._send_many("PSUBSCRIBE", b"psubscribe", {i: pats for i in range(self.num_shards)}, wait, add=None)

    def get_message(self, timeout: Optional[float] = None):
        """(channel, message) from the queue (only without a callback); None on timeout."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._close_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals

    def _close_all(self):
        for c in self._conns:
            c.close()
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
        try:
            self._sel.close()
        except Exception:  # noqa: BLE001
            pass

    def _send_many(self, cmd: str, kind: bytes, by_shard: Dict[int, List[bytes]], wait: bool, add) -> None:
        expect = []
        with self._cond:
            for shard, names in by_shard.items():
                for n in names:
                    key = (shard, kind, n)
                    expect.append((key, self._confirmed.get(key, 0) + 1))
        with self._send_lock:
            for shard, names in by_shard.items():
                if add is True:
                    self._channels[shard].update(names)
                elif add is False:
                    self._channels[shard].difference_update(names)
                c = self._conns[shard]
                try:
                    c.sock.sendall(pack_command((cmd, *names)))
                except (OSError, AttributeError) as e:
                    # The reader thread reconnects and re-subscribes everything.
                    logger.warning("Subscriber: %s on shard %d failed (%s); will resubscribe on reconnect",
                                   cmd, shard, e)
        if not wait:
            return
        deadline = time.monotonic() + self.confirm_timeout
        with self._cond:
            for key, target in expect:
                while self._confirmed.get(key, 0) < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"Subscriber: no {kind.decode()} confirmation for "
                                           f"{key[2]!r} from shard {key[0]}")
                    self._cond.wait(left)

    def _deliver(self, shard: int, msg) -> None:
        if not isinstance(msg, list) or not msg:
            return
        kind = msg[0]
        if kind == b"message":
            channel, data = msg[1], msg[2]
        elif kind == b"pmessage":
            channel, data = msg[2], msg[3]
        elif kind in (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe"):
            with self._cond:
                key = (shard, kind, msg[1])
                self._confirmed[key] = self._confirmed.get(key, 0) + 1
                self._cond.notify_all()
            return
        else:
            return
        self.messages_received += 1
        ch = channel.decode("utf-8", "replace")
        if self.callback is None:
            self._queue.put((ch, data))
            return
        try:
            self.callback(ch, data)
        except Exception:  # noqa: BLE001 - a bad callback must not kill delivery
            self.callback_errors += 1
            logger.exception("Subscriber callback raised for channel %s", ch)

    def _reconnect(self, shard: int) -> None:
        c = self._conns[shard]
        try:
            self._sel.unregister(c.sock)
        except Exception:  # noqa: BLE001
            pass
        c.close()
        delay = 0.05
        while not self._closed:
            try:
                with self._send_lock:
                    c.connect()
                    chans = sorted(self._channels[shard])
                    if chans:
                        c.sock.sendall(pack_command(("SUBSCRIBE", *chans)))
                    if self._patterns:
                        c.sock.sendall(pack_command(("PSUBSCRIBE", *sorted(self._patterns))))
                self._sel.register(c.sock, selectors.EVENT_READ, shard)
                logger.info("Subscriber: reconnected to shard %d at %s", shard, c.address)
                return
            except OSError as e:
                logger.debug("Subscriber: reconnect to %s failed: %s", c.address, e)
                c.close()
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _run(self) -> None:
        while not self._closed:
            try:
                events = self._sel.select(timeout=1.0)
            except (OSError, ValueError):
                if self._closed:
                    return
                continue
            for key, _ in events:
                shard = key.data
                if shard is None:
                    return  # woken by close()
                c = self._conns[shard]
                try:
                    data = c.sock.recv(1 << 18)
                except OSError:
                    data = b""
                if not data:
                    if self._closed:
                        return
                    logger.warning("Subscriber: lost connection to GCS shard %d at %s", shard, c.address)
                    self._reconnect(shard)
                    continue
                c.reader.feed(data)
                while True:
                    try:
                        msg = c.reader.gets()
                    except hiredis.ProtocolError:
                        logger.error("Subscriber: protocol error from shard %d", shard)
                        self._reconnect(shard)
                        break
                    if msg is False:
                        break
                    self._deliver(shard, msg)
