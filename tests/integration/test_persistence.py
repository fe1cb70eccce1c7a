"""petracache only: data survives a clean restart (SIGTERM) with flags, values, CAS values and
TTLs intact, and every acknowledged write survives kill -9 under write load (default WAL
mode). Each test runs its own server on its own db_path and restarts it there."""

import random
import re
import threading
import time
import unittest

import harness

ITEMS = 10000
BATCH = 200


def _value(i, rng):
    size = rng.choice([0, 1, 5, 20, 100, 500, 2000, 10000])
    # Binary, with protocol-looking bytes now and then.
    body = rng.randbytes(size)
    if size >= 5 and i % 7 == 0:
        body = b"\r\nEND\r\n"[:size] + body[7:]
    return body


def _pipeline(client, requests, expect_line):
    """Sends the requests in batches and checks each one-line reply."""
    for start in range(0, len(requests), BATCH):
        chunk = requests[start:start + BATCH]
        client.send(b"".join(chunk))
        for _ in chunk:
            line = client.read_line(timeout=30)
            if line != expect_line:
                raise AssertionError("got %r, want %r" % (line, expect_line))


def _gets_many(client, keys):
    """{key: (flags, value, cas)} for the keys that are present, via pipelined gets."""
    out = {}
    for start in range(0, len(keys), BATCH):
        chunk = keys[start:start + BATCH]
        client.send(b"gets " + b" ".join(chunk) + b"\r\n")
        while True:
            line = client.read_line(timeout=30)
            if line == b"END\r\n":
                break
            m = re.match(rb"VALUE (\S+) (\d+) (\d+) (\d+)\r\n\Z", line)
            if not m:
                raise AssertionError("bad gets reply line %r" % line)
            data = client.read_exact(int(m.group(3)) + 2, timeout=30)
            if data[-2:] != b"\r\n":
                raise AssertionError("value of %r not followed by \\r\\n" % m.group(1))
            out[m.group(1)] = (int(m.group(2)), data[:-2], int(m.group(4)))
    return out


class PersistenceTest(unittest.TestCase):
    """One fresh petracache per test (restarts need their own server)."""

    def setUp(self):
        if not harness.is_petracache():
            self.skipTest("petracache only: memcached does not persist (running against %s)"
                          % harness.server_kind())
        reason = harness.target_unavailable_reason()
        if reason:
            self.skipTest(reason)
        self.server = harness.start_server()
        self.addCleanup(self.server.cleanup)

    def restart(self, how="term"):
        if how == "term":
            code = self.server.stop()
            self.assertEqual(code, 0, "petracache did not exit cleanly on SIGTERM (code %s)\n%s"
                             % (code, self.server.output_tail()))
        else:
            self.server.kill()
        self.server.start()

    def test_clean_restart_keeps_everything(self):
        rng = random.Random(20240601)
        now = int(time.time())
        live, expired, short = {}, [], []
        requests = []
        for i in range(ITEMS):
            key = b"p:%05d" % i
            value = _value(i, rng)
            flags = rng.choice([0, 1, 42, 65535, 2 ** 31, 2 ** 32 - 1, rng.getrandbits(32)])
            kind = i % 8
            if kind == 0:
                exptime = -1                   # already expired
                expired.append(key)
            elif kind == 1:
                exptime = now - 3600           # absolute, in the past
                expired.append(key)
            elif kind == 2:
                exptime = 2                    # expires while we restart
                short.append(key)
            elif kind == 3:
                exptime = 3600                 # relative, live
            elif kind == 4:
                exptime = now + 86400 * 60     # absolute, live
            else:
                exptime = 0                    # never
            if exptime not in (-1, now - 3600, 2):
                live[key] = (flags, value)
            requests.append(b"set %s %d %d %d\r\n%s\r\n" % (key, flags, exptime, len(value),
                                                            value))
        with harness.connect(self.server, timeout=30) as c:
            _pipeline(c, requests, b"STORED\r\n")
            written_at = time.monotonic()  # every short TTL was set by now
            # A few deletes and a counter, which must persist too.
            deleted = list(live)[:50]
            _pipeline(c, [b"delete %s\r\n" % k for k in deleted], b"DELETED\r\n")
            for k in deleted:
                del live[k]
            self.assertEqual(c.request(b"set counter 0 0 1\r\n7\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"incr counter 35\r\n"), b"42\r\n")
            before = _gets_many(c, list(live) + [b"counter"])
        self.assertEqual(len(before), len(live) + 1)
        old_cas = {k: v[2] for k, v in before.items()}

        self.restart("term")
        # Let the short TTLs (2 s) run out, with a margin for a one-second clock.
        remaining = written_at + 3.5 - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

        with harness.connect(self.server, timeout=30) as c:
            after = _gets_many(c, list(live) + expired + short + deleted + [b"counter"])
            for key, (flags, value) in live.items():
                self.assertIn(key, after, "live key lost")
                got_flags, got_value, got_cas = after[key]
                self.assertEqual(got_flags, flags, key)
                self.assertEqual(got_value, value, key)
                self.assertEqual(got_cas, old_cas[key], "CAS of %r changed" % key)
            self.assertEqual(after[b"counter"][1], b"42")
            self.assertEqual(after[b"counter"][2], old_cas[b"counter"])
            for key in expired + short + deleted:
                self.assertNotIn(key, after, "%r should be gone" % key)
            self.assertEqual(len(after), len(live) + 1)
            # The CAS values handed out after the restart never repeat older ones, so a token
            # from before the restart cannot match a newer version of an item.
            sample = list(live)[:100]
            _pipeline(c, [b"set %s 0 0 3\r\nnew\r\n" % k for k in sample], b"STORED\r\n")
            fresh = _gets_many(c, sample)
            used = set(old_cas.values())
            for key in sample:
                self.assertNotIn(fresh[key][2], used, "CAS value reused after restart")
            # A stale token from before the restart is refused.
            k = sample[0]
            self.assertEqual(c.request(b"cas %s 0 0 1 %d\r\nx\r\n" % (k, old_cas[k])),
                             b"EXISTS\r\n")

    def test_flush_all_survives_restart(self):
        with harness.connect(self.server) as c:
            _pipeline(c, [b"set f%d 0 0 1\r\nx\r\n" % i for i in range(100)], b"STORED\r\n")
            self.assertEqual(c.request(b"flush_all\r\n"), b"OK\r\n")
            self.assertEqual(c.request(b"set after 0 0 1\r\ny\r\n"), b"STORED\r\n")
        self.restart("term")
        with harness.connect(self.server) as c:
            got = _gets_many(c, [b"f%d" % i for i in range(100)] + [b"after"])
            self.assertEqual(list(got), [b"after"])

    def test_meta_item_state_survives_restart(self):
        # The state the meta commands keep with an item (stale, recache token sent, binary
        # key) is part of the stored record: a restart must not forget an invalidation, nor
        # hand the recache token out a second time.
        with harness.connect(self.server) as c:
            self.assertEqual(c.request(b"ms s 2 T300\r\nhi\r\n"), b"HD\r\n")
            self.assertEqual(c.request(b"md s I\r\n"), b"HD\r\n")
            self.assertEqual(c.request(b"ms w 1 T300\r\nx\r\n"), b"HD\r\n")
            self.assertEqual(c.request(b"ms t 1 T300\r\nx\r\n"), b"HD\r\n")
            # t's token is won before the restart, w's after it.
            self.assertEqual(c.request(b"mg t R600\r\n"), b"HD W\r\n")
            self.assertEqual(c.request(b"ms YWJj 1 b\r\nz\r\n"), b"HD\r\n")
            self.assertEqual(c.request(b"set plain 0 0 1\r\np\r\n"), b"STORED\r\n")
        self.restart("kill")
        with harness.connect(self.server) as c:
            self.assertEqual(c.request(b"mg s\r\n"), b"HD X W\r\n")
            self.assertEqual(c.request(b"mg s\r\n"), b"HD Z X\r\n")
            self.assertEqual(c.request(b"mg t R600\r\n"), b"HD Z\r\n")
            self.assertEqual(c.request(b"mg w R600\r\n"), b"HD W\r\n")
            self.assertEqual(c.request(b"mg abc k v\r\n"), b"VA 1 kYWJj b\r\n")
            self.assertEqual(c.read_line(), b"z\r\n")
            self.assertEqual(c.request(b"mg plain k s\r\n"), b"HD kplain s1\r\n")
            # A plain write starts the item afresh.
            self.assertEqual(c.request(b"set s 0 0 1\r\nn\r\n"), b"STORED\r\n")
            self.assertEqual(c.request(b"mg s v\r\n"), b"VA 1\r\n")
            self.assertEqual(c.read_line(), b"n\r\n")

    def test_kill9_under_write_load_keeps_acknowledged_writes(self):
        rng = random.Random(int(time.time()))
        acked = {}            # key -> value, for keys written once
        hot_acked = {}        # hot key -> highest acknowledged version
        hot_sent = {}         # hot key -> highest version sent
        stop = threading.Event()
        errors = []

        def writer(wid):
            seq = 0
            try:
                with harness.connect(self.server, timeout=10) as c:
                    while not stop.is_set() and seq < 100000:
                        batch = []
                        for _ in range(50):
                            seq += 1
                            if seq % 5 == 0:
                                hk = b"hot:%d:%d" % (wid, seq % 20)
                                ver = b"%d" % seq
                                hot_sent[hk] = seq
                                batch.append((hk, ver, True))
                            else:
                                key = b"w:%d:%d" % (wid, seq)
                                value = b"%d-%d-" % (wid, seq) + b"v" * (seq % 300)
                                batch.append((key, value, False))
                        c.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v)
                                        for k, v, _ in batch))
                        for k, v, hot in batch:
                            line = c.read_line(timeout=10)
                            if line != b"STORED\r\n":
                                raise AssertionError("set %r: %r" % (k, line))
                            if hot:
                                hot_acked[k] = max(hot_acked.get(k, 0), int(v))
                            else:
                                acked[k] = v
            except (harness.ConnectionClosed, harness.ReadTimeout, ConnectionError, OSError):
                pass  # the kill
            except AssertionError as e:
                errors.append(e)

        writers = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
        for t in writers:
            t.start()
        time.sleep(rng.uniform(0.5, 2.5))
        self.server.kill()
        stop.set()
        for t in writers:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in writers), "writers did not stop")
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 100, "too few writes acknowledged before the kill")

        self.server.start()
        with harness.connect(self.server, timeout=30) as c:
            keys = sorted(acked)
            got = _gets_many(c, keys)
            lost = [k for k in keys if k not in got]
            self.assertEqual(lost[:10], [], "%d of %d acknowledged writes lost" % (
                len(lost), len(keys)))
            wrong = [k for k in keys if got[k][1] != acked[k]]
            self.assertEqual(wrong[:10], [], "wrong values after crash")
            hot = _gets_many(c, sorted(hot_acked))
            for k, ver in hot_acked.items():
                self.assertIn(k, hot)
                v = int(hot[k][1])
                self.assertGreaterEqual(v, ver, "hot key %r went back in time" % k)
                self.assertLessEqual(v, hot_sent[k])
            # And it takes writes again.
            self.assertEqual(c.request(b"set again 0 0 1\r\nx\r\n"), b"STORED\r\n")


if __name__ == "__main__":
    unittest.main()
