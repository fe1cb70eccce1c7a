"""petracache only: damaged storage at startup. Each test starts from a copy of one database
written in setUpClass (40,000 items of 1000 bytes with a 1 MiB memtable, so the data sits in
~40 SST files and RocksDB has already purged the WAL files that held it) and stopped cleanly,
damages it, and starts petracache on it. The rule: either the server refuses to start
(non-zero exit, a message naming the database path), or it starts and serves the data it
was given: never a silent empty or partial cache. Reads of a damaged block may fail with
SERVER_ERROR, but never return a wrong value or a silent miss.

The WAL tests write their own database (default 64 MiB memtable, so everything is still in
the WAL), kill -9 the server, and damage the WAL: a torn tail must be recovered up to the tear
(everything written before it), a corrupt record in the middle up to that record.
"""

import glob
import math
import os
import shutil
import tempfile
import unittest

import faults_util as fu
import harness

ITEMS = 40000
VALUE_LEN = 1000
STORAGE = {"write_buffer_size": "1MiB"}
WAL_ITEMS = 2000
WAL_VALUE_LEN = 500


def _value(i):
    return (b"%05d" % i) * (VALUE_LEN // 5)


def _wal_value(key):
    return (key * WAL_VALUE_LEN)[:WAL_VALUE_LEN]


def _keys():
    return [b"k%05d" % i for i in range(ITEMS)]


def _flip(path, offset, n):
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


class StorageFaultsTest(unittest.TestCase):
    base_dir = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        fu.skip_unless_petracache(cls)
        server = fu.make_petracache(storage=STORAGE)
        try:
            fu.start_checked(server)
            with harness.connect(server, timeout=30) as c:
                fu.pipeline(c, [b"set %s 0 0 %d\r\n%s\r\n" % (k, VALUE_LEN, _value(i))
                                for i, k in enumerate(_keys())], b"STORED\r\n")
            code = server.stop()
            if code != 0:
                raise AssertionError("setup: SIGTERM exit code %s\n%s" % (
                    code, server.output_tail()))
            cls.base_dir = tempfile.mkdtemp(prefix="petracache-faults-base-")
            shutil.copytree(server.db_path, os.path.join(cls.base_dir, "db"))
        finally:
            server.cleanup()
        ssts = glob.glob(os.path.join(cls.base_dir, "db", "*.sst"))
        if len(ssts) < 10:
            raise AssertionError("setup: expected the data in many SST files, got %d" % len(ssts))

    @classmethod
    def tearDownClass(cls):
        if cls.base_dir:
            shutil.rmtree(cls.base_dir, ignore_errors=True)
        super().tearDownClass()

    def damaged_server(self, damage):
        """A server on a fresh copy of the base database, after damage(db_path)."""
        server = fu.make_petracache(storage=STORAGE)
        self.addCleanup(server.cleanup)
        shutil.copytree(os.path.join(self.base_dir, "db"), server.db_path)
        damage(server.db_path)
        return server

    def assert_refused_or_intact(self, server, allow_read_errors=False):
        """Starts the server. If it exits: non-zero, naming the path. If it runs: every key
        has its value (or, with allow_read_errors, SERVER_ERROR). Returns what happened."""
        code, text = fu.run_expecting_exit(server)
        if code is not None:
            self.assertNotEqual(code, 0, "exited 0 on a damaged database:\n%s" % text)
            self.assertIn(server.db_path, text, "the message does not name the database "
                          "path:\n%s" % text)
            return "refused", text
        self.assertNotIn("still running", text[:40], "neither started nor exited:\n" + text)
        fu.start_checked(server)
        with harness.connect(server, timeout=30) as c:
            found, errors = fu.get_many_checked(c, _keys())
            self.assertTrue(c.request(b"version\r\n").startswith(b"VERSION "))
        wrong = [k for i, k in enumerate(_keys()) if k in found and found[k] != (0, _value(i))]
        self.assertEqual(wrong[:5], [], "wrong values served from a damaged database")
        missing = [k for k in _keys() if k not in found and k not in dict(errors)]
        self.assertEqual(len(missing), 0,
                         "started on a damaged database and silently lost %d of %d items "
                         "(e.g. %r)\n%s" % (len(missing), ITEMS, missing[:3],
                                            server.output_tail()))
        if not allow_read_errors:
            self.assertEqual(errors[:5], [])
        for k, line in errors:
            self.assertTrue(line.startswith(b"SERVER_ERROR"), "%r: %r" % (k, line))
        self.assertTrue(server.alive())
        return "started", errors

    # -- SST files --

    def test_sst_data_block_corrupted(self):
        def damage(db):
            sst = max(glob.glob(os.path.join(db, "*.sst")), key=os.path.getsize)
            _flip(sst, os.path.getsize(sst) // 2, 64)
        server = self.damaged_server(damage)
        what, detail = self.assert_refused_or_intact(server, allow_read_errors=True)
        if what == "started":
            # RocksDB checks a data block's checksum when it reads it, not at open: the keys
            # of that block must fail loudly.
            self.assertGreater(len(detail), 0, "a corrupted data block went unnoticed")

    def test_sst_footer_corrupted(self):
        def damage(db):
            sst = max(glob.glob(os.path.join(db, "*.sst")), key=os.path.getsize)
            _flip(sst, os.path.getsize(sst) - 200, 100)
        what, text = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")
        self.assertIn("corrupt", text)

    def test_sst_file_deleted(self):
        def damage(db):
            os.unlink(max(glob.glob(os.path.join(db, "*.sst")), key=os.path.getsize))
        what, text = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")

    # -- MANIFEST and CURRENT --

    def test_manifest_truncated(self):
        # RocksDB reads a MANIFEST cut short as if its last edits had never been written (and
        # would delete the SST files they added as obsolete); petracache compares what it
        # would recover with its record of the live table files and refuses first.
        def damage(db):
            (m,) = glob.glob(os.path.join(db, "MANIFEST-*"))
            os.truncate(m, os.path.getsize(m) // 2)
        what, text = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")
        self.assertIn("MANIFEST", text)

    def test_manifest_emptied(self):
        def damage(db):
            (m,) = glob.glob(os.path.join(db, "MANIFEST-*"))
            os.truncate(m, 0)
        what, _ = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")

    def test_manifest_bytes_flipped(self):
        def damage(db):
            (m,) = glob.glob(os.path.join(db, "MANIFEST-*"))
            _flip(m, os.path.getsize(m) // 2, 16)
        what, _ = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")

    def test_current_deleted(self):
        self.assert_refused_or_intact(
            self.damaged_server(lambda db: os.unlink(os.path.join(db, "CURRENT"))))

    def test_current_points_nowhere(self):
        def damage(db):
            with open(os.path.join(db, "CURRENT"), "w") as f:
                f.write("MANIFEST-999999\n")
        what, _ = self.assert_refused_or_intact(self.damaged_server(damage))
        self.assertEqual(what, "refused")

    # -- permissions --

    def test_db_dir_read_only(self):
        # Root ignores file modes, so a read-only bind mount of the directory stands in for
        # a read-only disk.
        server = self.damaged_server(lambda db: None)
        with fu.readonly_bind(server.db_path):
            code, text = fu.run_expecting_exit(server)
        self.assertIsNotNone(code, "started on a read-only database directory:\n" + text)
        self.assertNotEqual(code, 0)
        self.assertIn(server.db_path, text)

    # -- the WAL after kill -9 --

    def wal_case(self, damage):
        """Writes WAL_ITEMS in order (each acknowledged), kill -9, damage(newest WAL file),
        restart. Returns (number of items back, they form a prefix of the write order)."""
        server = fu.make_petracache()
        self.addCleanup(server.cleanup)
        fu.start_checked(server)
        keys = [b"w%05d" % i for i in range(WAL_ITEMS)]
        with harness.connect(server, timeout=30) as c:
            fu.pipeline(c, [b"set %s 0 0 %d\r\n%s\r\n" % (k, WAL_VALUE_LEN, _wal_value(k))
                            for k in keys], b"STORED\r\n")
        fu.kill9(server)
        wal = max(glob.glob(os.path.join(server.db_path, "*.log")), key=os.path.getsize)
        self.assertGreater(os.path.getsize(wal), WAL_ITEMS * WAL_VALUE_LEN,
                           "the items are expected in the WAL")
        damage(wal)
        fu.wait_port_released(server.port)
        code, text = fu.run_expecting_exit(server)
        self.assertIsNone(code, "did not start after WAL damage (exit %s):\n%s" % (code, text))
        fu.wait_port_released(server.port)
        fu.start_checked(server)
        with harness.connect(server, timeout=30) as c:
            found, errors = fu.get_many_checked(c, keys)
        self.assertEqual(errors, [])
        for k, (flags, value) in found.items():
            self.assertEqual(value, _wal_value(k))
        back = [k in found for k in keys]
        n = sum(back)
        return n, back == [True] * n + [False] * (WAL_ITEMS - n)

    def test_torn_wal_tail_recovers_everything_before_it(self):
        record = WAL_VALUE_LEN + 29 + 6   # at least: value, item header, key
        for cut in (1, 7, 300, 5000):
            with self.subTest(cut=cut):
                n, prefix = self.wal_case(lambda wal: os.truncate(wal, os.path.getsize(wal) - cut))
                self.assertTrue(prefix, "items after a lost one came back")
                lost = WAL_ITEMS - n
                self.assertLessEqual(lost, math.ceil(cut / record) + 1,
                                     "cutting %d bytes off the WAL lost %d items" % (cut, lost))

    def test_wal_record_corrupted_in_the_middle(self):
        # RocksDB's default kPointInTimeRecovery replays the WAL up to the first bad record:
        # the server starts with a consistent prefix of the writes (the later ones are lost).
        n, prefix = self.wal_case(lambda wal: _flip(wal, os.path.getsize(wal) // 2, 8))
        self.assertTrue(prefix, "not a prefix: writes after the bad record came back")
        self.assertGreater(n, WAL_ITEMS // 3, "lost more than the half after the bad record")


if __name__ == "__main__":
    unittest.main()
