"""Differential testing against Debian's memcached 1.6.18 (see differential.py): a fixed set
of seeds, each a random sequence of commands sent to both servers side by side, whose replies
must match byte for byte (CAS values, the VERSION suffix and STAT lines aside). Bounded to
about 30 s in all; `differential.py --seeds 1000` is the long run.

Also the regressions the long runs found, as deterministic tests, and (with --server
memcached) a self-check of the generator: memcached against a second memcached must never
diverge, or the generator produces something timing-dependent.
"""

import os
import tempfile
import time
import unittest

import differential as diff
import faults_util as fu
import harness

DEFAULT_SEEDS = range(1, 61)        # petracache with its default durability (wal)
SYNC_SEEDS = range(101, 116)        # durability = sync: replies wait for the commit thread
SELF_CHECK_SEEDS = range(1, 31)


def _skip_unless_both():
    if not os.access(harness.MEMCACHED_BIN, os.X_OK):
        raise unittest.SkipTest("memcached not found at %s" % harness.MEMCACHED_BIN)
    fu.skip_unless_petracache(None)


class DifferentialTest(unittest.TestCase):
    def run_seed_set(self, seeds, budget, durability=None, min_seeds=10):
        _skip_unless_both()
        out_dir = tempfile.mkdtemp(prefix="petracache-diff-")
        log = []
        stats = diff.run_seeds(seeds, out_dir=out_dir, time_budget=budget, log=log.append,
                               stop_after=1, durability=durability, shrink_budget=15.0)
        if stats.divergent or stats.unconfirmed:
            seed, report = (stats.divergent + stats.unconfirmed)[0]
            self.fail("memcached and petracache%s diverge on seed %d (rerun: "
                      "tests/integration/differential.py --seed %d%s --verbose)\n%s" % (
                          " (durability=%s)" % durability if durability else "", seed, seed,
                          " --durability %s" % durability if durability else "", report))
        self.assertGreaterEqual(stats.seeds, min(len(seeds), min_seeds), "too few seeds ran")
        self.assertEqual(stats.stalled, 0, "a batch stalled on both servers: the generator "
                         "sent something that left both waiting")
        os.rmdir(out_dir)

    def test_fixed_seeds(self):
        self.run_seed_set(DEFAULT_SEEDS, budget=16.0)

    def test_fixed_seeds_sync_durability(self):
        # Every batch waits for an fsync: a slow disk gets through fewer seeds.
        self.run_seed_set(SYNC_SEEDS, budget=12.0, durability="sync", min_seeds=5)

    def test_generator_self_check(self):
        if harness.is_petracache():
            self.skipTest("runs with --server memcached (memcached against memcached)")
        if not os.access(harness.MEMCACHED_BIN, os.X_OK):
            self.skipTest("memcached not found at %s" % harness.MEMCACHED_BIN)
        log = []
        stats = diff.run_seeds(SELF_CHECK_SEEDS, self_check=True, do_shrink=False,
                               time_budget=20.0, log=log.append)
        self.assertEqual([s for s, _ in stats.divergent + stats.unconfirmed], [],
                         "\n".join(log))
        self.assertEqual(stats.stalled, 0)


def _exchange(server, payload, then):
    """Sends payload in one write, reads replies until quiet, then sends `then` and returns
    (first replies, replies to `then`)."""
    with harness.connect(server, timeout=10) as c:
        c.send(payload)
        first = c.read_available(quiet=1.0, timeout=10)
        return first, c.get_reply(then)


class SwallowedDataTest(unittest.TestCase):
    """Found by the differential runs (fixed in 817b85f): the data block of a too-large value
    is swallowed, and the command after it, when it has to run on the disk pool (every write
    with durability = sync, a read that misses the block cache), was re-parsed from a copy
    that started with the tail of the swallowed bytes. So the bytes of the rejected value ran
    as a command and the real command was dropped. memcached just swallows them."""

    def setUp(self):
        _skip_unless_both()

    def compare(self, petracache, memcached_args, setup, payload, then):
        m = harness.start_server(kind="memcached", memcached_args=memcached_args)
        self.addCleanup(m.cleanup)
        for s in (m, petracache):
            with harness.connect(s) as c:
                for request, reply in setup:
                    self.assertEqual(c.request(request), reply)
        if petracache.db_path and getattr(self, "restart_petracache", False):
            self.assertEqual(petracache.stop(), 0)
            fu.start_checked(petracache)
        want = _exchange(m, payload, then)
        got = _exchange(petracache, payload, then)
        self.assertEqual(got, want, "petracache (second) differs from memcached (first)")

    def test_too_large_data_is_never_run_as_a_command(self):
        p = fu.make_petracache(durability="sync", storage={"item_size_max": "1024"})
        self.addCleanup(p.cleanup)
        fu.start_checked(p)
        data = b"delete victim\r\n" + b"a" * 1985
        # memcached: SERVER_ERROR object too large for cache, STORED; victim and k exist.
        # Before 817b85f petracache answered SERVER_ERROR ..., DELETED (the value's first
        # line ran as a command) and never executed `set k`.
        self.compare(p, ["-I", "1k", "-o", "slab_chunk_max=512"],
                     [(b"set victim 0 0 5\r\nhello\r\n", b"STORED\r\n")],
                     b"set big 0 0 %d\r\n%s\r\nset k 0 0 1\r\nv\r\n" % (len(data), data),
                     b"get k victim\r\n")

    def test_too_large_then_cold_read(self):
        # Default durability: the get that follows must read from disk after a restart.
        p = fu.make_petracache()
        self.addCleanup(p.cleanup)
        fu.start_checked(p)
        self.restart_petracache = True
        big = 2 * 1024 * 1024
        # memcached: SERVER_ERROR object too large for cache, VALUE cold ... END.
        # Before 817b85f petracache answered SERVER_ERROR ..., ERROR (the tail of the value
        # ran as a command).
        self.compare(p, [], [(b"set cold 0 0 5\r\nhello\r\n", b"STORED\r\n")],
                     b"set big 0 0 %d\r\n%s\r\nget cold\r\n" % (big, b"x" * big),
                     b"get cold\r\n")


class IncrOnLargeItemTest(unittest.TestCase):
    """Found by the differential runs (with memcached's slab_chunk_max lowered): memcached
    1.6.18 stores an item larger than slab_chunk_max (512 KiB by default) in chunks and never
    does incr/decr on a chunked item, whatever its bytes: `incr` answers non-numeric even when
    the value starts with a number. petracache does the arithmetic."""

    def setUp(self):
        _skip_unless_both()

    def test_incr_on_item_over_slab_chunk_max(self):
        value = b"12\r\n" + b"a" * 600000
        requests = [b"set t 0 0 %d\r\n%s\r\n" % (len(value), value), b"incr t 1\r\n",
                    b"decr t 1\r\n"]
        replies = []
        for server in (harness.start_server(kind="memcached"), fu.make_petracache()):
            self.addCleanup(server.cleanup)
            if server.kind == "petracache":
                fu.start_checked(server)
            with harness.connect(server, timeout=10) as c:
                replies.append([c.request(r) for r in requests])
        # memcached: STORED, then CLIENT_ERROR cannot increment or decrement non-numeric
        # value twice (petracache answered STORED, 13, 12 before it followed suit).
        self.assertEqual(replies[1], replies[0], "petracache (second) differs from memcached")


if __name__ == "__main__":
    unittest.main()
