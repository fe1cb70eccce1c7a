"""Many connections at once on the same keys: incr totals are exact, and add/cas races have
exactly one winner. Each thread has its own connection; every wait is bounded."""

import threading
import unittest

import harness

JOIN_TIMEOUT = 60.0


def run_threads(target, n):
    """Runs target(i) in n threads; returns their results (or raises the first error)."""
    results = [None] * n
    errors = []

    def wrap(i):
        try:
            results[i] = target(i)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    if any(t.is_alive() for t in threads):
        raise AssertionError("threads still running after %.0fs" % JOIN_TIMEOUT)
    if errors:
        raise errors[0]
    return results


class ConcurrencyTest(harness.ServerTestCase):

    def test_incr_one_key_from_many_connections(self):
        threads, per_thread, batch = 8, 2000, 50
        with self.connect() as c:
            self.assertEqual(c.request(b"set counter 0 0 1\r\n0\r\n"), b"STORED\r\n")

        def work(i):
            seen = []
            with harness.connect(self.server, timeout=20) as c:
                for _ in range(per_thread // batch):
                    c.send(b"incr counter 1\r\n" * batch)
                    for _ in range(batch):
                        seen.append(int(c.read_line()))
            return seen

        results = run_threads(work, threads)
        total = threads * per_thread
        with self.connect() as c:
            self.assertEqual(c.get_reply(b"get counter\r\n"),
                             b"VALUE counter 0 %d\r\n%d\r\nEND\r\n" % (len(str(total)), total))
        # Every increment returned a distinct value: none was lost or applied twice.
        everything = sorted(v for r in results for v in r)
        self.assertEqual(everything, list(range(1, total + 1)))

    def test_incr_and_decr_mixed(self):
        threads, per_thread = 6, 1000
        with self.connect() as c:
            self.assertEqual(c.request(b"set mixed 0 0 6\r\n100000\r\n"), b"STORED\r\n")

        def work(i):
            cmd = b"incr mixed 3\r\n" if i % 2 else b"decr mixed 2\r\n"
            with harness.connect(self.server, timeout=20) as c:
                for _ in range(per_thread // 50):
                    c.send(cmd * 50)
                    for _ in range(50):
                        int(c.read_line())

        run_threads(work, threads)
        expected = 100000 + (threads // 2) * per_thread * 3 - (threads // 2) * per_thread * 2
        with self.connect() as c:
            reply = c.get_reply(b"get mixed\r\n")
        self.assertEqual(int(reply.split(b"\r\n")[1]), expected, reply)

    def test_concurrent_add_has_one_winner(self):
        threads, rounds = 12, 30
        conns = [harness.connect(self.server, timeout=10) for _ in range(threads)]
        for c in conns:
            self.addCleanup(c.close)
        for r in range(rounds):
            key = b"race-add-%d" % r
            barrier = threading.Barrier(threads, timeout=10)

            def work(i, key=key, barrier=barrier):
                value = b"t%d" % i
                barrier.wait()
                conns[i].send(b"add %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
                return conns[i].read_line()

            replies = run_threads(work, threads)
            winners = [i for i, rep in enumerate(replies) if rep == b"STORED\r\n"]
            self.assertEqual(len(winners), 1, replies)
            self.assertEqual(replies.count(b"NOT_STORED\r\n"), threads - 1, replies)
            got = conns[0].get_reply(b"get %s\r\n" % key)
            value = b"t%d" % winners[0]
            self.assertEqual(got, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value))

    def test_concurrent_cas_with_same_token_has_one_winner(self):
        threads, rounds = 12, 30
        conns = [harness.connect(self.server, timeout=10) for _ in range(threads)]
        for c in conns:
            self.addCleanup(c.close)
        for r in range(rounds):
            key = b"race-cas-%d" % r
            self.assertEqual(conns[0].request(b"set %s 0 0 4\r\ninit\r\n" % key), b"STORED\r\n")
            line = conns[0].get_reply(b"gets %s\r\n" % key).split(b"\r\n")[0]
            token = line.split()[4]
            barrier = threading.Barrier(threads, timeout=10)

            def work(i, key=key, token=token, barrier=barrier):
                value = b"c%d" % i
                barrier.wait()
                conns[i].send(b"cas %s 0 0 %d %s\r\n%s\r\n" % (key, len(value), token, value))
                return conns[i].read_line()

            replies = run_threads(work, threads)
            winners = [i for i, rep in enumerate(replies) if rep == b"STORED\r\n"]
            self.assertEqual(len(winners), 1, replies)
            self.assertEqual(replies.count(b"EXISTS\r\n"), threads - 1, replies)
            got = conns[0].get_reply(b"get %s\r\n" % key)
            value = b"c%d" % winners[0]
            self.assertEqual(got, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value))

    def test_concurrent_append_loses_nothing(self):
        threads, per_thread = 8, 400
        with self.connect() as c:
            self.assertEqual(c.request(b"set log 0 0 0\r\n\r\n"), b"STORED\r\n")

        def work(i):
            piece = b"%c" % (ord("a") + i)
            with harness.connect(self.server, timeout=20) as c:
                for _ in range(per_thread // 50):
                    c.send(b"append log 0 0 1\r\n%s\r\n" % piece * 50)
                    for _ in range(50):
                        if c.read_line() != b"STORED\r\n":
                            raise AssertionError("append not stored")

        run_threads(work, threads)
        with self.connect(timeout=10) as c:
            reply = c.get_reply(b"get log\r\n")
        value = reply.split(b"\r\n")[1]
        self.assertEqual(len(value), threads * per_thread)
        for i in range(threads):
            self.assertEqual(value.count(b"%c" % (ord("a") + i)), per_thread)

    def test_many_connections_do_not_cross_talk(self):
        threads, ops = 48, 100

        def work(i):
            with harness.connect(self.server, timeout=20) as c:
                for j in range(ops):
                    key = b"conn-%d-%d" % (i, j % 10)
                    value = b"%d:%d" % (i, j)
                    c.send(b"set %s %d 0 %d\r\n%s\r\nget %s\r\n" % (
                        key, i, len(value), value, key))
                    if c.read_line() != b"STORED\r\n":
                        raise AssertionError("set failed")
                    got = c.get_reply(b"")
                    want = b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key, i, len(value), value)
                    if got != want:
                        raise AssertionError("conn %d got %r want %r" % (i, got, want))

        run_threads(work, threads)
        with self.connect() as c:
            self.assertTrue(c.request(b"version\r\n").startswith(b"VERSION 1.6.18"))


if __name__ == "__main__":
    unittest.main()
