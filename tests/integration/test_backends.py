"""The golden transcripts and a pymemcache round-trip under each io_backend (epoll,
io_uring_basic, io_uring) and with threads = 1 and 3; each checks that the startup log names
the backend it chose. petracache only.

To stay fast, each configuration runs one server and replays every golden file on it in turn
(test_golden gives each replay a fresh server): before each file a `flush_all` empties the
cache and replaces any pending delayed flush, and each file gets a fresh connection. Files
that sleep are replayed pipelined only; the others pipelined and chunked. The configurations
run in parallel."""

import concurrent.futures
import os
import re
import threading
import unittest

import golden_replay as gr
import harness

try:
    from pymemcache.client.base import Client as PymemcacheClient
except ImportError:  # pragma: no cover - Debian's python3-pymemcache is expected
    PymemcacheClient = None

# name -> ([server] settings, regex the "io: ..." part of the startup log must match)
CONFIGS = {
    "epoll": ({"io_backend": "epoll", "threads": 2}, r"^epoll$"),
    "io_uring_basic": ({"io_backend": "io_uring_basic", "threads": 2},
                       r"^io_uring \(.*basic level.*\)$"),
    "io_uring": ({"io_backend": "io_uring", "threads": 2}, r"^io_uring \((?!.*basic level).*\)$"),
    "threads1": ({"threads": 1}, r"^(epoll|io_uring \(.*\))$"),
    "threads3": ({"threads": 3}, r"^(epoll|io_uring \(.*\))$"),
}
_LISTEN_RE = r"listening on \S+ \(port (\d+)\), (\d+) worker threads, io: ([^\n]*)"
_UNAVAILABLE_RE = r"io_uring[^\n]*unavailable[^\n]*"


def _golden_plan():
    goldens = gr.load_goldens()
    plan = []
    for g in goldens:
        sleeps = any(s.sleep for s in g.segments)
        for mode in (("pipelined",) if sleeps else ("pipelined", "chunked")):
            plan.append((g, mode))
    # The sleeping files first, so a slow configuration shows early.
    plan.sort(key=lambda p: -sum(s.sleep for s in p[0].segments))
    return plan


def _flush(address):
    with harness.RawClient(address) as c:
        line = c.request(b"flush_all\r\n")
    if line != b"OK\r\n":
        raise gr.ReplayFailure("flush_all before the file answered %r" % line)


def _round_trip(address):
    """A short pymemcache workload; returns a list of problems."""
    problems = []
    client = PymemcacheClient(address, connect_timeout=5, timeout=5, default_noreply=False)
    try:
        values = {("rt%d" % i).encode(): os.urandom(i * 37 % 3000 + 1) for i in range(300)}
        for k, v in values.items():
            if not client.set(k, v):
                problems.append("set %r not stored" % k)
        got = client.get_many(list(values))
        if got != values:
            problems.append("get_many: %d of %d values wrong" % (
                sum(1 for k in values if got.get(k) != values[k]), len(values)))
        big = os.urandom(900 * 1024)  # several recv/send buffers
        client.set(b"big", big)
        if client.get(b"big") != big:
            problems.append("900 KiB value did not round-trip")
        client.set(b"n", b"10")
        if client.incr(b"n", 5) != 15 or client.decr(b"n", 3) != 12:
            problems.append("incr/decr")
        _, cas = client.gets(b"n")
        if not client.cas(b"n", b"20", cas) or client.cas(b"n", b"21", cas):
            problems.append("cas")
        if not client.delete(b"n") or client.get(b"n") is not None:
            problems.append("delete")
    finally:
        client.close()
    # Several connections at once, so every worker loop gets some.
    errors = []

    def worker(n):
        c = PymemcacheClient(address, connect_timeout=5, timeout=5, default_noreply=False)
        try:
            for i in range(50):
                k = ("w%d_%d" % (n, i)).encode()
                c.set(k, k * 3)
                if c.get(k) != k * 3:
                    errors.append("connection %d: %r" % (n, k))
        except Exception as e:  # noqa: BLE001 - reported as a problem
            errors.append("connection %d: %r" % (n, e))
        finally:
            c.close()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    problems += errors[:5]
    return problems


def _run_config(name, plan):
    """Starts the server of one configuration and runs everything on it. Returns a dict with
    'skip', 'start_error', 'log', 'goldens' (list of failures) and 'round_trip'."""
    settings, _ = CONFIGS[name]
    threads = settings.get("threads", 2)
    server_cfg = {k: v for k, v in settings.items() if k != "threads"}
    out = {"skip": None, "start_error": None, "log": "", "goldens": [], "round_trip": []}
    try:
        server = harness.start_server(threads=threads, extra_config={"server": server_cfg})
    except harness.ServerError as e:
        text = str(e)
        if settings.get("io_backend", "").startswith("io_uring") and \
                re.search(_UNAVAILABLE_RE, text):
            out["skip"] = re.search(_UNAVAILABLE_RE, text).group(0)
        else:
            out["start_error"] = text
        return out
    try:
        server.wait_for_log(r"\bready\b")
        out["log"] = server.log_text()
        for g, mode in plan:
            try:
                _flush(server.address)
                gr.replay(g, server.address, mode)
            except (gr.ReplayFailure, harness.ReadTimeout, harness.ConnectionClosed,
                    OSError) as e:
                msg = str(e)
                if not server.alive():
                    msg += "\nthe server exited (code %s)\n%s" % (
                        server.proc.returncode, server.output_tail())
                    out["goldens"].append(msg)
                    break
                out["goldens"].append(msg)
        if server.alive() and PymemcacheClient is not None:
            try:
                out["round_trip"] = _round_trip(server.address)
            except Exception as e:  # noqa: BLE001 - reported by the test
                out["round_trip"] = ["%s: %s" % (type(e).__name__, e)]
        if not server.alive():
            out["round_trip"].append("the server exited (code %s)\n%s" % (
                server.proc.returncode, server.output_tail()))
    finally:
        rc = server.stop()
        if rc != 0:
            out["round_trip"].append("exit code %s after SIGTERM\n%s" % (
                rc, server.output_tail()))
        server.cleanup()
    return out


class BackendTest(unittest.TestCase):
    results = {}

    @classmethod
    def setUpClass(cls):
        if not harness.is_petracache():
            raise unittest.SkipTest("petracache only (running against %s)" %
                                    harness.server_kind())
        reason = harness.target_unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        plan = _golden_plan()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(CONFIGS)) as pool:
            futures = {name: pool.submit(_run_config, name, plan) for name in CONFIGS}
            cls.results = {name: f.result() for name, f in futures.items()}

    def _result(self, name):
        r = self.results[name]
        if r["skip"]:
            self.skipTest(r["skip"])
        if r["start_error"]:
            self.fail("could not start: %s" % r["start_error"])
        return r

    def _check_log(self, name):
        r = self._result(name)
        settings, io_re = CONFIGS[name]
        m = re.search(_LISTEN_RE, r["log"])
        self.assertIsNotNone(m, r["log"])
        self.assertEqual(int(m.group(2)), settings.get("threads", 2), m.group(0))
        self.assertRegex(m.group(3), io_re)

    def _check_goldens(self, name):
        r = self._result(name)
        if r["goldens"]:
            self.fail("%d golden replays failed under %s:\n\n%s" % (
                len(r["goldens"]), name, "\n\n".join(r["goldens"])))

    def _check_round_trip(self, name):
        if PymemcacheClient is None:
            self.skipTest("pymemcache is not installed")
        r = self._result(name)
        self.assertEqual(r["round_trip"], [])


for _name in CONFIGS:
    setattr(BackendTest, "test_%s_startup_log" % _name,
            lambda self, n=_name: self._check_log(n))
    setattr(BackendTest, "test_%s_goldens" % _name,
            lambda self, n=_name: self._check_goldens(n))
    setattr(BackendTest, "test_%s_pymemcache" % _name,
            lambda self, n=_name: self._check_round_trip(n))


if __name__ == "__main__":
    unittest.main()
