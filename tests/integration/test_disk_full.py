"""petracache only: a full disk. db_path lives on a 48 MiB tmpfs that also holds a 12 MiB
filler file; the memtable is 4 MiB so flushes (SST writes) happen along the way.

In each durability mode: write 64 KiB values until writes fail. A failed write must be
answered `SERVER_ERROR ...` (every reply is waited for with a deadline, so a hang fails the
test) and the server must keep running; while the disk is full, `version` answers, reads of
acknowledged keys return their values, and `stats` counts the storage errors. Then the
filler is deleted and writes must resume, without a restart, within RESUME_TIMEOUT (RocksDB
clears a no-space background error by itself once space is back). Finally a clean restart
must bring back every acknowledged write.

Needs root (mount); skipped with the reason otherwise.
"""

import os
import re
import time
import unittest

import faults_util as fu
import harness

TMPFS_MIB = 48
FILLER_MIB = 12
VALUE = 64 * 1024
REPLY_TIMEOUT = 15.0     # a write that does not answer within this is a hang
FILL_DEADLINE = 45.0     # the disk must be full by then
RESUME_TIMEOUT = 30.0    # writes must work again this long after space is freed
STORAGE = {"write_buffer_size": "4MiB", "max_write_buffer_number": "2",
           "target_file_size_base": "4MiB", "block_cache_size": "16MiB"}


def _value(i):
    head = b"%08d:" % i
    return head + bytes([0x61 + i % 26]) * (VALUE - len(head))


def _stat(client, name):
    client.send(b"stats\r\n")
    text = client.read_until(b"END\r\n", timeout=REPLY_TIMEOUT)
    m = re.search(rb"STAT %s (\d+)\r\n" % name.encode(), text)
    return int(m.group(1)) if m else None


class DiskFullTest(fu.PetracacheFaultTest):

    def run_mode(self, mode):
        with fu.tmpfs(TMPFS_MIB) as mnt:
            filler = os.path.join(mnt, "filler")
            with open(filler, "wb") as f:
                for _ in range(FILLER_MIB):
                    f.write(b"\0" * (1 << 20))
            server = fu.make_petracache(db_path=os.path.join(mnt, "db"), durability=mode,
                                        storage=STORAGE)
            try:
                self.exercise(mode, mnt, filler, server)
            finally:
                server.cleanup()   # stops it before the tmpfs is unmounted

    def exercise(self, mode, mnt, filler, server):
        fu.start_checked(server)
        acked = []
        errors = []
        started = time.monotonic()
        with harness.connect(server, timeout=REPLY_TIMEOUT) as c:
            i = 0
            # Fill: stop after 10 failed writes in a row (each must fail fast, not hang).
            while time.monotonic() - started < FILL_DEADLINE:
                try:
                    line = c.request(b"set k%06d 0 0 %d\r\n%s\r\n" % (i, VALUE, _value(i)),
                                     timeout=REPLY_TIMEOUT)
                except harness.ReadTimeout:
                    self.fail("%s: write %d got no reply within %.0fs (hang on a full disk)\n%s"
                              % (mode, i, REPLY_TIMEOUT, server.output_tail()))
                except harness.ConnectionClosed:
                    self.fail("%s: connection closed at write %d; server alive: %s\n%s" % (
                        mode, i, server.alive(), server.output_tail()))
                if line == b"STORED\r\n":
                    acked.append(i)
                    errors = []
                else:
                    self.assertTrue(line.startswith(b"SERVER_ERROR "),
                                    "%s: a failed write must get SERVER_ERROR, got %r" % (mode, line))
                    errors.append(line)
                    if len(errors) >= 10:
                        break
                i += 1
            self.assertEqual(len(errors), 10, "%s: the %d MiB tmpfs never filled up in %.0fs "
                             "(%d writes acknowledged)" % (mode, TMPFS_MIB, FILL_DEADLINE,
                                                           len(acked)))
            self.assertTrue(server.alive(), "server died on a full disk")
            self.assertGreater(len(acked), 20, "disk full almost at once: test setup problem")
            free_mib = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize / 2 ** 20

            # While full: the server answers, reads work, the errors are counted.
            self.assertTrue(c.request(b"version\r\n", timeout=2).startswith(b"VERSION "))
            sample = acked[:: max(1, len(acked) // 40)] + acked[-5:]
            found, read_errors = fu.get_many_checked(c, [b"k%06d" % k for k in sample],
                                                     timeout=REPLY_TIMEOUT)
            self.assertEqual(read_errors, [], "%s: reads failed while the disk is full" % mode)
            for k in sample:
                self.assertEqual(found.get(b"k%06d" % k), (0, _value(k)),
                                 "%s: acknowledged key k%06d wrong while the disk is full" % (
                                     mode, k))
            storage_errors = _stat(c, "storage_errors")
            self.assertIsNotNone(storage_errors, "stats has no storage_errors")
            self.assertGreaterEqual(storage_errors, 10)

            # Free space: writes must come back without a restart.
            os.unlink(filler)
            freed_at = time.monotonic()
            resumed = None
            attempts = 0
            while time.monotonic() - freed_at < RESUME_TIMEOUT:
                attempts += 1
                line = c.request(b"set probe 0 0 1\r\nx\r\n", timeout=REPLY_TIMEOUT)
                if line == b"STORED\r\n":
                    resumed = time.monotonic() - freed_at
                    break
                self.assertTrue(line.startswith(b"SERVER_ERROR "), line)
                time.sleep(0.25)
            self.assertIsNotNone(resumed, "%s: writes did not resume within %.0fs of freeing "
                                 "%d MiB (no restart)\n%s" % (mode, RESUME_TIMEOUT, FILLER_MIB,
                                                              server.output_tail()))
            # And keep working for a while.
            more = list(range(i + 1, i + 41))
            fu.pipeline(c, [b"set k%06d 0 0 %d\r\n%s\r\n" % (k, VALUE, _value(k)) for k in more],
                        b"STORED\r\n", timeout=REPLY_TIMEOUT)
            acked += more

        code = server.stop()
        self.assertEqual(code, 0, "%s: SIGTERM exit code %s\n%s" % (mode, code,
                                                                   server.output_tail()))
        fu.start_checked(server)
        with harness.connect(server, timeout=30) as c:
            found, read_errors = fu.get_many_checked(c, [b"k%06d" % k for k in acked])
        self.assertEqual(read_errors, [])
        missing = [k for k in acked if found.get(b"k%06d" % k) != (0, _value(k))]
        self.assertEqual(missing[:10], [], "%s: %d acknowledged writes lost after the disk-full "
                         "episode and a clean restart" % (mode, len(missing)))
        self.summaries.append(
            "disk_full[%s]: %d writes acknowledged before ENOSPC (%.1f MiB free then), 10 "
            "failed with SERVER_ERROR, writes resumed %.1fs after freeing %d MiB (%d probes), "
            "%d acknowledged writes intact after restart, %.1fs" % (
                mode, len(acked) - len(more), free_mib, resumed, FILLER_MIB, attempts,
                len(acked), time.monotonic() - started))

    def test_wal(self):
        self.run_mode("wal")

    def test_sync(self):
        self.run_mode("sync")

    def test_none(self):
        self.run_mode("none")


if __name__ == "__main__":
    unittest.main()
