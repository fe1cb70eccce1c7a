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


if __name__ == "__main__":
    unittest.main()
