"""petracache only: clients that misbehave. In every test another client keeps being served
promptly, the server keeps running, and its memory stays under a bound derived from its
configuration.

Memory bound. The server runs with `[server] write_buffer_size = 1 MiB` (the unsent reply
bytes per connection above which it stops reading that connection), a 32 MiB block cache and
an 8 MiB memtable. A connection may hold one request being parsed (at most `item_size_max`
plus its line), the reply bytes queued (write_buffer_size plus the one reply that crossed it)
and the same again in the buffer handed to the kernel. So each connection may cost up to
PER_CONN = 2 * (write_buffer_size + largest reply) + 256 KiB, and the peak RSS (VmHWM, reset
before each phase) must stay under baseline + connections * PER_CONN + SLACK, where SLACK =
48 MiB covers the allocator's caches, memtable growth and thread stacks. memcached stays
within a few MiB in all of these.
"""

import os
import socket
import struct
import threading
import time
import unittest

import faults_util as fu
import harness

MIB = 1 << 20
WRITE_BUFFER = 1 * MIB
SLACK_MIB = 48
BIG = 256 * 1024
SERVER = {"write_buffer_size": "1MiB"}
STORAGE = {"block_cache_size": "32MiB", "write_buffer_size": "8MiB"}
PROMPT = 2.0    # seconds: the bystander's worst round trip (a blocked loop waits far longer)


def per_conn_mib(largest_reply):
    return (2 * (WRITE_BUFFER + largest_reply) + 256 * 1024) / MIB


class Bystander(threading.Thread):
    """A well-behaved client doing get round trips until stopped; records the worst latency
    and any failure."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0
        self.error = None

    def run(self):
        try:
            with harness.connect(self.server, timeout=10) as c:
                while not self.stop.is_set():
                    t = time.monotonic()
                    reply = c.get_reply(b"get small\r\n", timeout=10)
                    self.worst = max(self.worst, time.monotonic() - t)
                    if reply != b"VALUE small 0 2\r\nok\r\nEND\r\n":
                        raise AssertionError("bystander got %r" % reply[:100])
                    self.count += 1
                    time.sleep(0.005)
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self, test):
        fu.wait_until(lambda: self.count >= 20 or self.error is not None, 10, 0.01)
        self.stop.set()
        self.join(15)
        test.assertFalse(self.is_alive(), "bystander stuck")
        test.assertIsNone(self.error, "bystander failed: %r" % self.error)
        test.assertGreaterEqual(self.count, 20, "bystander barely served")
        test.assertLess(self.worst, PROMPT, "bystander waited %.2fs for a reply" % self.worst)


def _raw(server, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(server.address)
    return s


def _settle_rss(pid, timeout=5.0):
    """Waits until RSS stops growing (two samples 0.2 s apart within 1 MiB), bounded."""
    deadline = time.monotonic() + timeout
    last = fu.rss_mib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = fu.rss_mib(pid)
        if abs(now - last) < 1:
            return now
        last = now
    return last


class AbuseTest(fu.PetracacheFaultTest):

    def setUp(self):
        self.server = fu.make_petracache(server=SERVER, storage=STORAGE)
        self.addCleanup(self.server.cleanup)
        fu.start_checked(self.server)
        with harness.connect(self.server) as c:
            self.assertEqual(c.request(b"set small 0 0 2\r\nok\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"set big 0 0 %d\r\n%s\r\n" % (BIG, b"b" * BIG)),
                             b"STORED\r\n")
            c.get_reply(b"get big\r\n")
        self.baseline = _settle_rss(self.server.pid)
        self.assertTrue(fu.reset_peak_rss(self.server.pid), "cannot reset VmHWM")

    def assert_memory(self, what, connections, largest_reply, per_conn=None):
        if os.environ.get("PETRACACHE_SANITIZED"):
            # ASan's quarantine and redzones keep freed memory resident: RSS bounds say
            # nothing about the server there (the other checks of these tests still run).
            return
        peak = fu.peak_rss_mib(self.server.pid)
        if per_conn is None:
            per_conn = per_conn_mib(largest_reply)
        bound = self.baseline + connections * per_conn + SLACK_MIB
        self.summaries.append("abuse[%s]: peak RSS %.0f MiB (baseline %.0f, bound %.0f)" % (
            what, peak, self.baseline, bound))
        self.assertLess(peak, bound, "%s: peak RSS %.0f MiB over the bound %.0f MiB "
                        "(baseline %.0f MiB, %d connections)" % (
                            what, peak, bound, self.baseline, connections))
        self.assertTrue(self.server.alive())

    def test_slow_readers_that_never_read(self):
        n = 40
        bystander = Bystander(self.server)
        bystander.start()
        socks = []
        try:
            for _ in range(n):
                s = _raw(self.server, rcvbuf=4096)
                s.sendall(b"get big\r\n" * 200)        # 50 MiB of replies each, never read
                socks.append(s)
            _settle_rss(self.server.pid)
            time.sleep(1.0)
            bystander.finish(self)
            self.assert_memory("40 slow readers", n, BIG)
        finally:
            for s in socks:
                s.close()
        with harness.connect(self.server) as c:
            self.assertEqual(c.get_reply(b"get small\r\n"), b"VALUE small 0 2\r\nok\r\nEND\r\n")

    def test_one_multiget_reply_is_bounded(self):
        # One `get` naming a 256 KiB item 400 times asks for a 100 MiB reply. memcached sends
        # it from the items themselves (its RSS grows by < 1 MiB). Before a204cc8 petracache
        # built the whole reply in memory first, so a single request line could take any
        # amount of memory (a 4 MiB get line of a 1 MiB item's key repeated: terabytes).
        s = _raw(self.server, rcvbuf=4096)
        try:
            s.sendall(b"get" + b" big" * 400 + b"\r\n")
            _settle_rss(self.server.pid)
            time.sleep(1.0)
            self.assert_memory("one 100 MiB multi-get, unread", 1, BIG)
        finally:
            s.close()

    def test_one_multiget_of_cold_items_is_bounded(self):
        # The same, for items only on disk: such a multi-get runs on the blocking pool, which
        # answers it in write_buffer_size pieces, each asked for once the client has read the
        # last one. 320 cold 256 KiB items (80 MiB) in one `get`, unread.
        cold = fu.make_petracache(server=SERVER, storage=dict(
            STORAGE, hot_cache_size="0", block_cache_size="4MiB", write_buffer_size="2MiB"))
        self.addCleanup(cold.cleanup)
        fu.start_checked(cold)
        keys = [b"cold%d" % i for i in range(320)]
        with harness.connect(cold) as c:
            for i, k in enumerate(keys):
                value = bytes([65 + i % 26]) * BIG
                self.assertEqual(c.request(b"set %s 0 0 %d\r\n%s\r\n" % (k, BIG, value)),
                                 b"STORED\r\n")
        cold.stop()
        fu.start_checked(cold)  # a cold block cache; the memtable holds a few items at most
        baseline = _settle_rss(cold.pid)
        self.assertTrue(fu.reset_peak_rss(cold.pid), "cannot reset VmHWM")
        s = _raw(cold, rcvbuf=4096)
        try:
            s.sendall(b"get " + b" ".join(keys) + b"\r\n")
            _settle_rss(cold.pid)
            time.sleep(1.0)
            if not os.environ.get("PETRACACHE_SANITIZED"):
                peak = fu.peak_rss_mib(cold.pid)
                bound = baseline + per_conn_mib(BIG) + SLACK_MIB
                self.summaries.append("abuse[one 80 MiB multi-get of cold items, unread]: peak "
                                      "RSS %.0f MiB (baseline %.0f, bound %.0f)" % (
                                          peak, baseline, bound))
                self.assertLess(peak, bound)
        finally:
            s.close()
        # The reply is complete and in order when read.
        with harness.connect(cold, timeout=30) as c:
            c.send(b"get " + b" ".join(keys) + b"\r\n")
            for i, k in enumerate(keys):
                self.assertEqual(c.read_line(timeout=30), b"VALUE %s 0 %d\r\n" % (k, BIG))
                self.assertEqual(c.read_exact(BIG + 2, timeout=30),
                                 bytes([65 + i % 26]) * BIG + b"\r\n")
            self.assertEqual(c.read_line(timeout=30), b"END\r\n")
        self.assertTrue(cold.alive())

    def test_slow_loris(self):
        n = 400
        partials = [b"set loris%d 0 0 100\r\n" + b"x" * 50, b"get loris%d", b"gets ",
                    b"incr loris%d", b"set loris%d 0 0 10"]
        socks = []
        bystander = Bystander(self.server)
        bystander.start()
        try:
            for i in range(n):
                s = _raw(self.server)
                p = partials[i % len(partials)]
                s.sendall(p % i if b"%d" in p else p)
                socks.append(s)
            # Trickle one more byte on each, every 0.25 s, for 2 s.
            for _ in range(8):
                for s in socks:
                    s.sendall(b"y")
                time.sleep(0.25)
            bystander.finish(self)
            # Nothing to reply: a connection holds its partial request (a few bytes here) in
            # at most one 16 KiB read buffer; 64 KiB each is generous.
            self.assert_memory("400 slow-loris connections", n, 0, per_conn=1 / 16)
        finally:
            for s in socks:
                s.close()

    def endless(self, prefix, limit_bytes):
        """Sends prefix then junk without a newline until the server closes (bounded by
        limit_bytes). Returns the bytes sent before the close was seen."""
        s = _raw(self.server)
        sent = 0
        chunk = b"k " * 32768
        try:
            s.sendall(prefix)
            while sent < limit_bytes:
                try:
                    s.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    return sent
                sent += len(chunk)
            s.settimeout(5)
            try:
                return sent if s.recv(1) == b"" else None
            except ConnectionResetError:
                return sent
            except socket.timeout:
                return None
        finally:
            s.close()

    def test_endless_line(self):
        bystander = Bystander(self.server)
        bystander.start()
        # Any line but get/gets is closed after 2048 bytes; a get line after 4 MiB.
        junk = self.endless(b"zzz", 64 * MIB)
        getline = self.endless(b"get ", 64 * MIB)
        bystander.finish(self)
        self.assertIsNotNone(junk, "an endless non-get line was not closed within 64 MiB")
        self.assertIsNotNone(getline, "an endless get line was not closed within 64 MiB")
        self.assert_memory("endless lines", 1, 4 * MIB)
        self.summaries.append("abuse[endless line]: closed after %d KiB (junk), %d KiB (get)"
                              % (junk // 1024, getline // 1024))

    def test_values_at_and_over_the_limit(self):
        limit = 1048576 - 56 - 2 - 2      # key "k", flags 0, default item_size_max 1 MiB
        with harness.connect(self.server, timeout=30) as c:
            value = bytes(range(256)) * (limit // 256) + b"\r\n" * ((limit % 256) // 2)
            value += b"x" * (limit - len(value))
            self.assertEqual(len(value), limit)
            self.assertEqual(c.request(b"set k 0 0 %d\r\n%s\r\n" % (limit, value)),
                             b"STORED\r\n")
            self.assertEqual(c.get_reply(b"get k\r\n"),
                             b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (limit, value))
            over = value + b"!"
            self.assertEqual(c.request(b"set k 0 0 %d\r\n%s\r\n" % (limit + 1, over)),
                             b"SERVER_ERROR object too large for cache\r\n")
            self.assertEqual(c.get_reply(b"get k\r\n"), b"END\r\n", "set over the limit must "
                             "remove the old value")
            # A stream of over-limit values never wedges the connection.
            c.send(b"".join(b"set o%d 0 0 %d\r\n%s\r\n" % (i, limit + 1, over) for i in range(8)))
            for _ in range(8):
                self.assertEqual(c.read_line(timeout=30),
                                 b"SERVER_ERROR object too large for cache\r\n")
            self.assertEqual(c.get_reply(b"get small\r\n"), b"VALUE small 0 2\r\nok\r\nEND\r\n")
        self.assert_memory("values at the limit", 1, limit)

    def test_100mb_of_pipelined_gets(self):
        keys, size = 64, 16 * 1024
        values = [(b"%04d" % i) * (size // 4) for i in range(keys)]
        with harness.connect(self.server, timeout=30) as c:
            fu.pipeline(c, [b"set p%d 0 0 %d\r\n%s\r\n" % (i, size, v)
                            for i, v in enumerate(values)], b"STORED\r\n")
        fu.reset_peak_rss(self.server.pid)
        requests = 6400                  # 6400 * 16 KiB = 100 MiB of values
        sock = _raw(self.server)
        sock.settimeout(30)
        errors = []

        def sender():
            try:
                batch = b"".join(b"get p%d\r\n" % i for i in range(keys))
                for _ in range(requests // keys):
                    sock.sendall(batch)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=sender, daemon=True)
        started = time.monotonic()
        t.start()
        buf = bytearray()
        received = 0
        try:
            for i in range(requests):
                k = i % keys
                want = b"VALUE p%d 0 %d\r\n%s\r\nEND\r\n" % (k, size, values[k])
                while len(buf) < len(want):
                    chunk = sock.recv(1 << 20)
                    self.assertTrue(chunk, "closed after %d replies" % i)
                    buf += chunk
                    received += len(chunk)
                    self.assertLess(time.monotonic() - started, 60, "too slow")
                if buf[:len(want)] != want:
                    self.fail("reply %d wrong: %r" % (i, bytes(buf[:80])))
                del buf[:len(want)]
        finally:
            sock.close()
            t.join(10)
        self.assertEqual(errors, [])
        elapsed = time.monotonic() - started
        self.summaries.append("abuse[100 MiB pipelined gets]: %d replies, %.0f MiB in %.1fs" % (
            requests, received / MIB, elapsed))
        self.assert_memory("100 MiB of pipelined gets", 1, size)

    def total_connections(self):
        with harness.connect(self.server) as c:
            c.send(b"stats\r\n")
            text = c.read_until(b"END\r\n")
        return int(text.split(b"STAT total_connections ")[1].split(b"\r\n")[0])

    def test_connect_disconnect_loop(self):
        n = 5000
        pid = self.server.pid
        fds_before = fu.open_fds(pid)
        total_before = self.total_connections()
        bystander = Bystander(self.server)
        bystander.start()
        started = time.monotonic()
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(self.server.address)
            kind = i % 4
            if kind == 1:
                s.sendall(b"version\r\n")                  # and never read the reply
            elif kind == 2:
                s.sendall(b"get small\r\n")
                s.recv(100)
            elif kind == 3:
                s.sendall(b"set x 0 0 5\r\nab")           # half a request, then RST
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        elapsed = time.monotonic() - started
        bystander.finish(self)

        def settled():
            with harness.connect(self.server) as c:
                c.send(b"stats\r\n")
                text = c.read_until(b"END\r\n")
            curr = int(text.split(b"STAT curr_connections ")[1].split(b"\r\n")[0])
            return curr <= 2 and fu.open_fds(pid) <= fds_before + 2
        self.assertTrue(fu.wait_until(settled, 10), "connections or fds not released: %d fds "
                        "now, %d before" % (fu.open_fds(pid), fds_before))
        self.assertGreaterEqual(self.total_connections() - total_before, n)
        self.assert_memory("5000 connect/disconnect", 1, 0)
        self.summaries.append("abuse[connect loop]: %d connections in %.1fs, bystander worst "
                              "%.0f ms" % (n, elapsed, bystander.worst * 1000))


if __name__ == "__main__":
    unittest.main()
