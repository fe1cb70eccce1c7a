"""petracache only: the deliberate differences from memcached 1.6.18 listed in
tests/golden/README.md (mcrouter compatibility), and the version string."""

import re
import unittest

import harness


class DeliberateDifferencesTest(harness.ServerTestCase):
    petracache_only = True

    def test_version_names_memcached_then_petracache(self):
        with self.connect() as c:
            line = c.request(b"version\r\n")
        self.assertRegex(line, rb"^VERSION 1\.6\.18 petracache-\d+\.\d+\.\d+\S*\r\n\Z")

    def test_delete_accepts_a_numeric_exptime(self):
        # mcrouter sends "delete <key> <exptime>" when its client gave one; memcached 1.6.18
        # answers the usage error to anything but "0".
        with self.connect() as c:
            for arg in (b"10", b"1", b"4294967295", b"00", b"-1"):
                self.assertEqual(c.request(b"set k 0 0 1\r\nx\r\n"), b"STORED\r\n")
                self.assertEqual(c.request(b"delete k %s\r\n" % arg), b"DELETED\r\n", arg)
                self.assertEqual(c.request(b"delete k %s\r\n" % arg), b"NOT_FOUND\r\n", arg)
                self.assertEqual(c.get_reply(b"get k\r\n"), b"END\r\n")
            # noreply still works after the time.
            self.assertEqual(c.request(b"set k 0 0 1\r\nx\r\n"), b"STORED\r\n")
            c.send(b"delete k 10 noreply\r\n")
            self.assertEqual(c.get_reply(b"get k\r\n"), b"END\r\n")
            # A non-numeric argument is still the usage error.
            self.assertEqual(
                c.request(b"delete k abc\r\n"),
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")

    def test_mcrouter_extensions_never_get_a_bare_error(self):
        # A bare ERROR makes mcrouter drop the connection and every request on it.
        with self.connect() as c:
            for req in (b"lease-get k\r\n", b"metaget k\r\n"):
                line = c.request(req)
                self.assertTrue(line.startswith(b"SERVER_ERROR "), (req, line))
            # lease-set carries a data block: whatever the reply, the block is consumed and
            # the connection stays in step.
            c.send(b"lease-set k 123 0 0 5\r\nhello\r\n")
            line = c.read_line()
            self.assertNotEqual(line, b"ERROR\r\n")
            self.assertTrue(re.match(rb"^(STORED|NOT_STORED|SERVER_ERROR .*)\r\n\Z", line), line)
            self.assertTrue(c.request(b"version\r\n").startswith(b"VERSION "))

    def test_meta_get_refuses_access_history_flags(self):
        # h (hit before) and l (seconds since last access) need every read to record itself;
        # PetraCache's reads write nothing, so mg refuses them instead of inventing values.
        # ms, md and ma ignore them, as memcached does.
        with self.connect() as c:
            self.assertEqual(c.request(b"ms k 1\r\nx\r\n"), b"HD\r\n")
            for req in (b"mg k h\r\n", b"mg k v l\r\n", b"mg missing h\r\n"):
                self.assertEqual(c.request(req), b"CLIENT_ERROR invalid flag\r\n", req)
            self.assertEqual(c.request(b"ms k 1 h l\r\ny\r\n"), b"HD\r\n")
            self.assertEqual(c.request(b"ma n h l\r\n"), b"NF\r\n")
            self.assertEqual(c.request(b"md k h l\r\n"), b"HD\r\n")

    def test_meta_debug_reports_write_time_and_no_fetch_field(self):
        # me: memcached's fields, la counted from the item's last write, no fetch= field.
        with self.connect() as c:
            self.assertEqual(c.request(b"set key 5 0 3\r\nabc\r\n"), b"STORED\r\n")
            line = c.request(b"me key\r\n")
            self.assertRegex(line, rb"^ME key exp=-1 la=[01] cas=\d+ cls=1 size=69\r\n\Z")
            self.assertEqual(c.request(b"me nothing\r\n"), b"EN\r\n")
            # Item sizes and slab classes as memcached 1.6.18 reports them for the same items
            # (tests/golden/meta_debug.golden pins the rest of the line against it).
            k250 = b"k" * 250
            for key, value, cls, size in ((b"m", b"a" * 100, 4, 160), (b"big", b"b" * 2000, 15, 2062),
                                          (k250, b"x", 7, 310), (b"s", b"x", 1, 61)):
                self.assertEqual(c.request(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)),
                                 b"STORED\r\n")
                self.assertRegex(c.request(b"me %s\r\n" % key),
                                 rb"^ME %s exp=-1 la=[01] cas=\d+ cls=%d size=%d\r\n\Z"
                                 % (key, cls, size))


if __name__ == "__main__":
    unittest.main()
