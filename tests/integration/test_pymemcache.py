"""pymemcache (Debian's python3-pymemcache 3.5.2) against the server: every command the
client offers, binary-safe values up to the item size limit and just over it, large
multi-gets, and a few thousand keys. (pymemcache 3.5.2 has no gat/gats; the goldens cover
them.)"""

import random
import time
import unittest

import harness

try:
    from pymemcache.client.base import Client
    from pymemcache import exceptions as mcexc
except ImportError:  # pragma: no cover - reported as a skip
    Client = None

ITEM_SIZE_MAX = 1024 * 1024
ALL_BYTES = bytes(range(256))


def max_value_size(key, flags=0):
    """The largest value memcached 1.6.18 stores under `key` by default: its item header (48
    bytes, 8 of CAS), the key and a NUL, 4 bytes of flags when non-zero, the value's \\r\\n."""
    return ITEM_SIZE_MAX - 48 - 8 - len(key) - 1 - (4 if flags else 0) - 2


def binary_value(size, seed=0):
    """`size` bytes containing every byte value (when size >= 256), varied by seed."""
    if size == 0:
        return b""
    rot = seed % 256
    pattern = ALL_BYTES[rot:] + ALL_BYTES[:rot]
    reps = size // 256 + 1
    return (pattern * reps)[:size]


class FlagsSerde:
    """Keeps the flags visible: values go out as (bytes, flags) and come back as tuples."""

    def serialize(self, key, value):
        if isinstance(value, tuple):
            return value[0], value[1]
        return value, 0

    def deserialize(self, key, value, flags):
        return value, flags


@unittest.skipIf(Client is None, "pymemcache is not installed (Debian: python3-pymemcache)")
class PymemcacheTest(harness.ServerTestCase):

    def setUp(self):
        self.prefix = "%s-" % self._testMethodName[5:]
        self.mc = self.client()

    def client(self, **kwargs):
        kwargs.setdefault("default_noreply", False)
        c = Client(self.server.address, connect_timeout=5, timeout=10, no_delay=True,
                   **kwargs)
        self.addCleanup(c.close)
        return c

    def key(self, name):
        return self.prefix + str(name)

    # -- storage and retrieval -----------------------------------------------------------

    def test_set_get_binary_values(self):
        mc = self.client(serde=FlagsSerde())
        sizes = [0, 1, 2, 255, 256, 257, 1000, 4096, 65535, 65536, 100000, 500000]
        for i, size in enumerate(sizes):
            value = binary_value(size, seed=i)
            flags = [0, 1, 0xFFFFFFFF, 12345][i % 4]
            self.assertTrue(mc.set(self.key(size), (value, flags)), size)
        for i, size in enumerate(sizes):
            flags = [0, 1, 0xFFFFFFFF, 12345][i % 4]
            self.assertEqual(mc.get(self.key(size)), (binary_value(size, seed=i), flags), size)

    def test_value_with_protocol_bytes(self):
        for value in [b"\r\n", b"END\r\n", b"\r\nEND\r\n", b"VALUE x 0 1\r\n", b"\x00" * 10,
                      b"a\r\nb\nc\rd", b" " * 5]:
            self.assertTrue(self.mc.set(self.key("v"), value))
            self.assertEqual(self.mc.get(self.key("v")), value)

    def test_item_size_limit(self):
        mc = self.client(serde=FlagsSerde())
        for key, flags in [("k", 0), (self.key("medium-key"), 0), ("k", 7),
                           ("x" * 250, 0), ("y" * 250, 0xFFFFFFFF)]:
            limit = max_value_size(key, flags)
            value = binary_value(limit, seed=len(key))
            with self.subTest(key_len=len(key), flags=flags, limit=limit):
                self.assertTrue(mc.set(key, (value, flags)))
                self.assertEqual(mc.get(key), (value, flags))
                with self.assertRaises(mcexc.MemcacheServerError) as cm:
                    mc.set(key, (value + b"!", flags))
                self.assertIn(b"object too large for cache", cm.exception.args[0])
                # A set that is too large removes the old value.
                self.assertIsNone(mc.get(key))
                # And the connection is still in sync.
                self.assertTrue(mc.set(key, (b"small", flags)))
                self.assertEqual(mc.get(key), (b"small", flags))

    def test_too_large_keeps_old_value_for_add_replace_append(self):
        key = self.key("k")
        self.assertTrue(self.mc.set(key, b"old"))
        big = b"z" * (ITEM_SIZE_MAX + 10)
        for op in (self.mc.replace, self.mc.append, self.mc.prepend):
            with self.assertRaises(mcexc.MemcacheServerError):
                op(key, big)
            self.assertEqual(self.mc.get(key), b"old")

    def test_get_many_500_keys(self):
        values = {self.key(i): binary_value(i, seed=i) for i in range(500)}
        self.assertEqual(self.mc.set_many(values), [])
        missing = [self.key("missing-%d" % i) for i in range(20)]
        keys = list(values) + missing
        random.Random(1).shuffle(keys)
        self.assertEqual(self.mc.get_many(keys), values)
        got = self.mc.gets_many(keys)
        self.assertEqual({k: v for k, (v, _) in got.items()}, values)
        self.assertTrue(all(int(cas) > 0 for _, cas in got.values()))

    def test_thousands_of_keys(self):
        rng = random.Random(42)
        values = {}
        for i in range(3000):
            size = rng.choice([0, 1, 10, 100, 300, 1000, 3000])
            values[self.key(i)] = bytes(rng.getrandbits(8) for _ in range(size))
        keys = list(values)
        for start in range(0, len(keys), 250):
            batch = {k: values[k] for k in keys[start:start + 250]}
            self.assertEqual(self.mc.set_many(batch), [])
        for start in range(0, len(keys), 100):
            batch = keys[start:start + 100]
            self.assertEqual(self.mc.get_many(batch), {k: values[k] for k in batch})
        self.assertTrue(self.mc.delete_many(keys))
        for start in range(0, len(keys), 500):
            self.assertEqual(self.mc.get_many(keys[start:start + 500]), {})

    def test_get_miss_and_default(self):
        self.assertIsNone(self.mc.get(self.key("nope")))
        self.assertEqual(self.mc.get(self.key("nope"), default=b"d"), b"d")
        self.assertEqual(self.mc.get_many([self.key("a"), self.key("b")]), {})

    def test_add_replace_append_prepend(self):
        k = self.key("k")
        self.assertTrue(self.mc.add(k, b"1"))
        self.assertFalse(self.mc.add(k, b"2"))
        self.assertEqual(self.mc.get(k), b"1")
        self.assertFalse(self.mc.replace(self.key("nope"), b"x"))
        self.assertIsNone(self.mc.get(self.key("nope")))
        self.assertTrue(self.mc.replace(k, b"3"))
        self.assertTrue(self.mc.append(k, b">"))
        self.assertTrue(self.mc.prepend(k, b"<"))
        self.assertEqual(self.mc.get(k), b"<3>")
        self.assertFalse(self.mc.append(self.key("nope"), b"x"))
        self.assertFalse(self.mc.prepend(self.key("nope"), b"x"))
        self.assertIsNone(self.mc.get(self.key("nope")))

    def test_append_prepend_keep_flags(self):
        mc = self.client(serde=FlagsSerde())
        k = self.key("k")
        self.assertTrue(mc.set(k, (b"mid", 42)))
        self.assertTrue(mc.append(k, (b"+", 7)))
        self.assertTrue(mc.prepend(k, (b"-", 9)))
        self.assertEqual(mc.get(k), (b"-mid+", 42))

    def test_gets_cas(self):
        k = self.key("k")
        self.assertIsNone(self.mc.cas(k, b"x", b"1"))  # NOT_FOUND
        self.assertTrue(self.mc.set(k, b"a"))
        value, cas = self.mc.gets(k)
        self.assertEqual(value, b"a")
        self.assertTrue(self.mc.cas(k, b"b", cas))
        self.assertFalse(self.mc.cas(k, b"c", cas))  # EXISTS: stale token
        value, cas2 = self.mc.gets(k)
        self.assertEqual(value, b"b")
        self.assertNotEqual(cas, cas2)
        self.assertTrue(self.mc.set(k, b"d"))  # another writer
        self.assertFalse(self.mc.cas(k, b"e", cas2))
        self.assertEqual(self.mc.get(k), b"d")
        self.assertEqual(self.mc.gets(self.key("nope")), (None, None))

    def test_cas_changes_on_every_write_but_not_on_touch(self):
        k = self.key("n")
        self.assertTrue(self.mc.set(k, b"1"))
        seen = [self.mc.gets(k)[1]]
        for op in (lambda: self.mc.incr(k, 1), lambda: self.mc.decr(k, 1),
                   lambda: self.mc.append(k, b"0"), lambda: self.mc.prepend(k, b"1"),
                   lambda: self.mc.replace(k, b"5"), lambda: self.mc.set(k, b"6")):
            op()
            seen.append(self.mc.gets(k)[1])
        self.assertEqual(len(set(seen)), len(seen), seen)
        self.assertTrue(self.mc.touch(k, 100))
        self.assertEqual(self.mc.gets(k)[1], seen[-1])

    def test_incr_decr(self):
        k = self.key("n")
        self.assertIsNone(self.mc.incr(k, 1))
        self.assertIsNone(self.mc.decr(k, 1))
        self.assertTrue(self.mc.set(k, b"10"))
        self.assertEqual(self.mc.incr(k, 5), 15)
        self.assertEqual(self.mc.decr(k, 3), 12)
        self.assertEqual(self.mc.decr(k, 100), 0)
        self.assertTrue(self.mc.set(k, str(2 ** 64 - 1).encode()))
        self.assertEqual(self.mc.incr(k, 1), 0)
        self.assertEqual(self.mc.incr(k, 2 ** 64 - 1), 2 ** 64 - 1)
        self.assertTrue(self.mc.set(k, b"100"))
        self.assertEqual(self.mc.decr(k, 1), 99)
        self.assertEqual(self.mc.get(k), b"99 ")
        self.assertTrue(self.mc.set(k, b"abc"))
        with self.assertRaises(mcexc.MemcacheClientError):
            self.mc.incr(k, 1)
        # The connection is still usable after the error.
        self.assertEqual(self.mc.get(k), b"abc")

    def test_delete_and_delete_many(self):
        k = self.key("k")
        self.assertFalse(self.mc.delete(k))
        self.assertTrue(self.mc.set(k, b"x"))
        self.assertTrue(self.mc.delete(k))
        self.assertIsNone(self.mc.get(k))
        keys = [self.key(i) for i in range(50)]
        self.assertEqual(self.mc.set_many({kk: b"v" for kk in keys}), [])
        self.assertTrue(self.mc.delete_many(keys + [self.key("never")]))
        self.assertEqual(self.mc.get_many(keys), {})

    def test_touch_and_expiry(self):
        k = self.key("k")
        self.assertFalse(self.mc.touch(k, 10))
        self.assertTrue(self.mc.set(k, b"x"))
        self.assertTrue(self.mc.touch(k, 100))
        self.assertEqual(self.mc.get(k), b"x")
        self.assertTrue(self.mc.touch(k, -1))
        self.assertIsNone(self.mc.get(k))
        self.assertTrue(self.mc.set(k, b"x", expire=-1))
        self.assertIsNone(self.mc.get(k))
        self.assertTrue(self.mc.set(k, b"x", expire=1000))
        self.assertEqual(self.mc.get(k), b"x")

    def test_flush_all(self):
        keys = [self.key(i) for i in range(20)]
        self.assertEqual(self.mc.set_many({k: b"v" for k in keys}), [])
        self.assertTrue(self.mc.flush_all())
        self.assertEqual(self.mc.get_many(keys), {})
        self.assertTrue(self.mc.set(keys[0], b"after"))
        self.assertEqual(self.mc.get(keys[0]), b"after")
        # A delayed flush: nothing goes at once.
        self.assertTrue(self.mc.flush_all(delay=100))
        self.assertEqual(self.mc.get(keys[0]), b"after")
        # A later immediate flush replaces it (so it cannot fire during other tests).
        self.assertTrue(self.mc.flush_all(delay=0))
        self.assertIsNone(self.mc.get(keys[0]))

    def test_stats(self):
        stats = self.mc.stats()
        for name in ["pid", "uptime", "time", "version", "curr_connections",
                     "total_connections", "cmd_get", "cmd_set", "cmd_flush", "cmd_touch",
                     "get_hits", "get_misses", "get_expired", "delete_hits", "delete_misses",
                     "incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_hits",
                     "cas_misses", "cas_badval", "touch_hits", "touch_misses", "bytes_read",
                     "bytes_written", "limit_maxbytes", "threads", "curr_items",
                     "total_items", "bytes", "evictions"]:
            self.assertIn(name.encode(), stats, name)
        self.assertTrue(stats[b"version"].startswith(b"1.6.18"), stats[b"version"])
        self.assertEqual(stats[b"pid"], self.server.pid)
        self.assertGreaterEqual(stats[b"curr_connections"], 1)
        before = stats
        k = self.key("k")
        self.mc.get(k)  # miss
        self.mc.set(k, b"v")
        self.mc.get(k)  # hit
        self.mc.get_many([k, self.key("nope")])  # hit + miss
        self.mc.delete(self.key("nope"))
        self.mc.touch(k, 100)
        after = self.mc.stats()

        def delta(name):
            return after[name.encode()] - before[name.encode()]
        self.assertEqual(delta("cmd_get"), 4)
        self.assertEqual(delta("get_hits"), 2)
        self.assertEqual(delta("get_misses"), 2)
        self.assertEqual(delta("cmd_set"), 1)
        self.assertEqual(delta("delete_misses"), 1)
        self.assertEqual(delta("cmd_touch"), 1)
        self.assertEqual(delta("touch_hits"), 1)
        self.assertGreater(delta("bytes_read"), 0)
        self.assertGreater(delta("bytes_written"), 0)
        settings = self.mc.stats("settings")
        self.assertIn(b"item_size_max", settings)

    def test_version(self):
        v = self.mc.version()
        self.assertTrue(v == b"1.6.18" or v.startswith(b"1.6.18 petracache-"), v)
        if harness.is_petracache():
            self.assertRegex(v, rb"^1\.6\.18 petracache-\d+\.\d+\.\d+")

    def test_noreply_defaults(self):
        quiet = self.client(default_noreply=True)
        k = self.key("k")
        self.assertTrue(quiet.set(k, b"1"))
        self.assertTrue(quiet.add(k, b"2"))        # not stored, but noreply says True
        self.assertTrue(quiet.replace(self.key("nope"), b"x"))
        self.assertTrue(quiet.append(k, b"a"))
        self.assertTrue(quiet.prepend(k, b"p"))
        self.assertIsNone(quiet.incr(self.key("n"), 1, noreply=True))
        self.assertTrue(quiet.touch(k, 100))
        self.assertTrue(quiet.delete(self.key("nope")))
        self.assertEqual(quiet.set_many({self.key(i): b"v" for i in range(10)}), [])
        # The same connection then answers a get in sync: nothing was replied before it.
        self.assertEqual(quiet.get(k), b"p1a")
        self.assertIsNone(quiet.get(self.key("nope")))
        self.assertEqual(self.mc.get(k), b"p1a")
        self.assertTrue(quiet.delete(k))
        self.assertIsNone(quiet.get(k))
        self.assertTrue(quiet.flush_all())
        self.assertEqual(quiet.get_many([self.key(i) for i in range(10)]), {})

    def test_shutdown_is_refused(self):
        with self.assertRaises(mcexc.MemcacheUnknownCommandError):
            self.mc.shutdown()
        time.sleep(0.05)
        self.assertTrue(self.server.alive())
        self.assertTrue(self.client().set(self.key("k"), b"alive"))

    def test_quit_then_reconnect(self):
        k = self.key("k")
        self.assertTrue(self.mc.set(k, b"x"))
        self.mc.quit()
        self.assertEqual(self.mc.get(k), b"x")  # pymemcache reconnects

    def test_unicode_values_and_keys(self):
        mc = self.client(allow_unicode_keys=True, encoding="utf-8")
        k = self.key("ключ")
        self.assertTrue(mc.set(k, "значение".encode("utf-8")))
        self.assertEqual(mc.get(k), "значение".encode("utf-8"))


if __name__ == "__main__":
    unittest.main()
