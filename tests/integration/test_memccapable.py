"""libmemcached's protocol checker, ASCII tests only: `memccapable -a`. Every test it runs
must pass (memcached 1.6.18 passes all 27)."""

import os
import re
import shutil
import subprocess
import unittest

import harness

MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"
# The ASCII tests of libmemcached-tools 1.1.x; all must be run and pass.
EXPECTED_TESTS = [
    "version", "quit", "verbosity", "set", "set noreply", "get", "gets", "mget", "flush",
    "flush noreply", "add", "add noreply", "replace", "replace noreply", "cas", "cas noreply",
    "delete", "delete noreply", "incr", "incr noreply", "decr", "decr noreply", "append",
    "append noreply", "prepend", "prepend noreply", "stat",
]
_LINE = re.compile(r"^ascii (.+?)\s+\[(\w+)\]\s*$")


class MemccapableTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(MEMCCAPABLE, os.X_OK):
            raise unittest.SkipTest("memccapable not installed (Debian: libmemcached-tools)")
        super().setUpClass()

    def run_memccapable(self, *extra):
        argv = [MEMCCAPABLE, "-a", "-t", "5", "-h", "127.0.0.1", "-p", str(self.server.port)]
        argv += list(extra)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)

    def test_all_ascii_tests_pass(self):
        proc = self.run_memccapable()
        out = proc.stdout.decode("utf-8", "replace")
        results = {}
        for line in out.splitlines():
            m = _LINE.match(line)
            if m:
                results[m.group(1)] = m.group(2)
        failed = sorted(name for name, status in results.items() if status != "pass")
        detail = ""
        if failed:
            # Rerun the failing tests verbosely so the assertion is in the message.
            for name in failed:
                again = self.run_memccapable("-v", "-T", "ascii " + name)
                detail += "\n--- memccapable -v -T 'ascii %s' ---\n%s" % (
                    name, again.stdout.decode("utf-8", "replace")[-2000:])
        self.assertEqual(failed, [], "memccapable failures: %s\n%s%s" % (
            failed, out, detail + ("\n" + self.server.output_tail() if failed else "")))
        missing = [t for t in EXPECTED_TESTS if t not in results]
        self.assertEqual(missing, [], "tests memccapable did not run:\n" + out)
        self.assertIn("All tests passed", out)
        self.assertEqual(proc.returncode, 0, out)
        self.assertTrue(self.server.alive(), "the server died\n" + self.server.output_tail())


if __name__ == "__main__":
    unittest.main()
