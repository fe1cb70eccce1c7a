#!/usr/bin/python3
"""Runs the integration suites (tests/integration/test_*.py) with plain unittest against a
real server, and ends with the line `N passed, N failed, N skipped`.

  PETRACACHE_BIN=build/src/server/petracache /usr/bin/python3 tests/integration/run.py
  /usr/bin/python3 tests/integration/run.py --server memcached
  /usr/bin/python3 tests/integration/run.py --server memcached test_golden test_concurrency
  /usr/bin/python3 tests/integration/run.py --server memcached -k incr

The target is petracache ($PETRACACHE_BIN) unless --server memcached is given (or
PETRACACHE_TEST_SERVER=memcached). Everything not petracache-specific must pass against
memcached too: that is how the tests themselves are checked. If the petracache binary does
not exist, the suites that need a server are skipped with the reason (set
PETRACACHE_REQUIRE_BIN=1 to make that a failure instead). Exit status: 0 when nothing failed.
"""

import argparse
import fnmatch
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402


class _Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed = 0
        self.started_at = {}

    def startTest(self, test):
        self.started_at[test.id()] = time.monotonic()
        super().startTest(test)

    def addSuccess(self, test):
        self.passed += 1
        super().addSuccess(test)


def _iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _iter_tests(t)
        else:
            yield t


def _filter(suite, patterns):
    """Keeps the tests whose id contains one of the patterns (fnmatch-style if it has * or ?)."""
    out = unittest.TestSuite()
    for t in _iter_tests(suite):
        tid = t.id()
        for p in patterns:
            if ("*" in p or "?" in p) and fnmatch.fnmatch(tid, "*" + p + "*"):
                out.addTest(t)
                break
            if p in tid:
                out.addTest(t)
                break
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=harness.SERVERS,
                    default=os.environ.get("PETRACACHE_TEST_SERVER", "petracache"))
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose id contains this (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true", help="one character per test")
    ap.add_argument("suites", nargs="*",
                    help="suite modules to run, e.g. test_golden (default: all test_*.py)")
    args = ap.parse_args(argv)

    harness.set_server_kind(args.server)
    reason = harness.target_unavailable_reason()
    if reason:
        print("run.py: %s: %s" % (args.server, reason), file=sys.stderr)
        if args.server == "petracache" and os.environ.get("PETRACACHE_REQUIRE_BIN") == "1":
            print("0 passed, 1 failed")
            return 1
        print("run.py: suites that need a server are SKIPPED", file=sys.stderr)

    loader = unittest.TestLoader()
    if args.suites:
        names = [s[:-3] if s.endswith(".py") else s for s in args.suites]
        suite = unittest.TestSuite(loader.loadTestsFromName(n) for n in names)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    if args.patterns:
        suite = _filter(suite, args.patterns)

    print("integration tests against %s%s" % (
        args.server,
        " (%s)" % harness.petracache_bin() if args.server == "petracache" else ""))
    start = time.monotonic()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if args.quiet else 2,
                                     resultclass=_Result)
    result = runner.run(suite)
    harness.reap_all()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    print("integration: %s, %.1fs" % (args.server, time.monotonic() - start))
    print("%d passed, %d failed, %d skipped" % (result.passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
