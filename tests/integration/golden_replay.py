#!/usr/bin/python3
"""Replays the golden transcripts in tests/golden/*.golden against a real server and checks
every reply byte. The format is described in tests/golden/README.md.

Each file is replayed in three modes, each on a fresh server with an empty cache and one
fresh connection:
  whole      each checkpoint's request bytes in one send, then its replies are checked
  chunked    each checkpoint's request bytes split into small random chunks (seeded)
  pipelined  all request bytes of the file in one send (broken only at @sync, @sleep, or
             where a request uses a value captured from a reply), then all replies are checked

Standalone:
  /usr/bin/python3 tests/integration/golden_replay.py --server memcached [FILE...]
  /usr/bin/python3 tests/integration/golden_replay.py --record FILE   # print actual replies
"""

import argparse
import concurrent.futures
import glob
import os
import random
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

GOLDEN_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
MODES = ("whole", "chunked", "pipelined")
REPLY_TIMEOUT = 5.0  # a reply that has not fully arrived by then is a failure
QUIET_AFTER_END = 0.15  # after the last expected byte, how long extra bytes are waited for

_NAME_RE = re.compile(rb"[a-z_][a-z0-9_]*\Z")
_PLACEHOLDERS = ("num", "cas", "any", "stats", "close")


class GoldenFormatError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Parsing


def unescape(text, lineno):
    """Decodes the C-style escapes of one line into a list of parts: bytes (literal) and
    ('ph', name, capture) tuples for {placeholders}. `text` is bytes."""
    parts = []
    lit = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == 0x5C:  # backslash
            if i + 1 >= n:
                raise GoldenFormatError("line %d: dangling backslash" % lineno)
            e = text[i + 1:i + 2]
            simple = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\", b"0": b"\0"}
            if e in simple:
                lit += simple[e]
                i += 2
            elif e == b"x":
                h = text[i + 2:i + 4]
                if len(h) != 2 or not re.match(rb"[0-9a-fA-F]{2}\Z", h):
                    raise GoldenFormatError("line %d: bad \\x escape" % lineno)
                lit.append(int(h, 16))
                i += 4
            else:
                raise GoldenFormatError("line %d: unknown escape \\%s" % (lineno, e.decode()))
        elif c == 0x7B:  # {
            j = text.find(b"}", i)
            if j < 0:
                raise GoldenFormatError("line %d: unclosed {" % lineno)
            body = text[i + 1:j]
            m = re.match(rb"rep:([0-9]{1,8}):(.)\Z", body, re.S)
            if m:  # {rep:N:C}: N copies of the byte C (long keys and values)
                lit += m.group(2) * int(m.group(1))
                i = j + 1
                continue
            if lit:
                parts.append(bytes(lit))
                lit = bytearray()
            name, _, capture = body.partition(b":")
            if capture and name not in (b"num", b"cas"):
                raise GoldenFormatError("line %d: only {num:x}/{cas:x} capture" % lineno)
            if capture and not _NAME_RE.match(capture):
                raise GoldenFormatError("line %d: bad capture name %r" % (lineno, capture))
            if name.decode() not in _PLACEHOLDERS and not _NAME_RE.match(name):
                raise GoldenFormatError("line %d: bad placeholder {%s}" % (lineno, body.decode()))
            parts.append(("ph", name.decode(), capture.decode() or None))
            i = j + 1
        else:
            lit.append(c)
            i += 1
    if lit:
        parts.append(bytes(lit))
    return parts


class Segment:
    """The requests and expected replies between two checkpoints."""

    def __init__(self):
        self.request = []   # parts: bytes or ('ph', var, None) references to captured values
        self.expect = []    # parts: bytes or ('ph', name, capture)
        self.sleep = 0.0    # seconds to wait after this segment's replies were checked
        self.barrier = False  # pipelined mode too reads all replies before sending more
        self.lineno = 0     # first line of the segment, for messages

    def uses_vars(self):
        return {p[1] for p in self.request if isinstance(p, tuple)}

    def captures(self):
        return {p[2] for p in self.expect if isinstance(p, tuple) and p[2]}

    def empty(self):
        return not self.request and not self.expect and not self.sleep and not self.barrier


class Golden:
    def __init__(self, path, segments, expects_close):
        self.path = path
        self.name = os.path.basename(path)
        self.segments = segments
        self.expects_close = expects_close


def _merge(parts):
    out = []
    for p in parts:
        if isinstance(p, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += p
        else:
            out.append(p)
    return out


def parse_golden(path, data=None):
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    segments = []
    cur = Segment()
    closed = False
    captured = set()

    def finish():
        nonlocal cur
        if not cur.empty():
            cur.request = _merge(cur.request)
            cur.expect = _merge(cur.expect)
            segments.append(cur)
        cur = Segment()

    for lineno, raw in enumerate(data.split(b"\n"), 1):
        if raw.endswith(b"\r"):
            raise GoldenFormatError("%s:%d: file has CRLF line endings" % (path, lineno))
        if raw.startswith(b"#"):
            continue
        if raw.strip() == b"" or raw == b"==":
            finish()
            continue
        if closed:
            raise GoldenFormatError("%s:%d: nothing may follow {close}" % (path, lineno))
        if not cur.request and not cur.expect:
            cur.lineno = lineno
        if raw == b"@sync":
            if cur.empty() and segments:
                segments[-1].barrier = True
            else:
                cur.barrier = True
                finish()
            continue
        if raw.startswith(b"@sleep "):
            try:
                cur.sleep = float(raw[7:])
            except ValueError:
                raise GoldenFormatError("%s:%d: bad @sleep" % (path, lineno))
            if not 0 < cur.sleep <= 5:
                raise GoldenFormatError("%s:%d: @sleep must be in (0, 5]" % (path, lineno))
            finish()
            continue
        if raw.startswith(b"> "):
            parts = unescape(raw[2:], lineno)
            for p in parts:
                if isinstance(p, tuple):
                    if p[1] not in captured:
                        raise GoldenFormatError("%s:%d: {%s} was not captured before" %
                                                (path, lineno, p[1]))
            # A request using a value captured in this segment's replies starts a new one.
            if {p[1] for p in parts if isinstance(p, tuple)} & cur.captures():
                finish()
                cur.lineno = lineno
            cur.request += parts
        elif raw.startswith(b"< "):
            parts = unescape(raw[2:], lineno)
            for p in parts:
                if isinstance(p, tuple):
                    name, capture = p[1], p[2]
                    if name == "close":
                        if len(parts) != 1:
                            raise GoldenFormatError("%s:%d: {close} must be alone on its line"
                                                    % (path, lineno))
                        closed = True
                    elif name not in _PLACEHOLDERS:
                        if name not in captured:
                            raise GoldenFormatError("%s:%d: {%s} was not captured before" %
                                                    (path, lineno, name))
                    if capture:
                        captured.add(capture)
            cur.expect += [p for p in parts
                           if not (isinstance(p, tuple) and p[1] == "close")]
        else:
            raise GoldenFormatError("%s:%d: a line must start with '> ', '< ', '#', '==' or "
                                    "'@sleep ', '@sync', or be blank" % (path, lineno))
    finish()
    for seg in segments:
        _check_determinism(path, seg)
    if not segments:
        raise GoldenFormatError("%s: no requests" % path)
    return Golden(path, segments, closed)


def _check_determinism(path, seg):
    """Placeholders match greedily; make sure what follows one can never be eaten by it, so a
    simple left-to-right matcher (in Python here, in C++ elsewhere) is exact."""
    parts = seg.expect
    for i, p in enumerate(parts):
        if not isinstance(p, tuple) or p[1] not in _PLACEHOLDERS:
            continue
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if isinstance(nxt, tuple):
            raise GoldenFormatError("%s:%d: two placeholders in a row" % (path, seg.lineno))
        if nxt is None:
            continue
        first = nxt[:1]
        if p[1] in ("num", "cas") and first.isdigit():
            raise GoldenFormatError("%s:%d: {%s} followed by a digit" % (path, seg.lineno, p[1]))
        if p[1] == "any" and first not in (b"\r", b"\n"):
            raise GoldenFormatError("%s:%d: {any} must be followed by \\r or \\n" %
                                    (path, seg.lineno))
        if p[1] == "stats" and first == b"S":
            raise GoldenFormatError("%s:%d: {stats} followed by 'S'" % (path, seg.lineno))


def load_goldens(paths=None):
    if not paths:
        paths = sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.golden")))
    return [parse_golden(p) for p in paths]


# ---------------------------------------------------------------------------------------------
# Matching

FULL, PARTIAL, MISMATCH = "full", "partial", "mismatch"


def match(parts, data, env):
    """Matches data against the expected parts from the start. Returns (status, pos, caps,
    fail): FULL when every part matched (pos = bytes used), PARTIAL when data is a proper
    prefix of something that could match, MISMATCH otherwise (pos = first wrong byte,
    fail = (index of the part, offset inside it) for messages)."""
    pos = 0
    caps = {}
    n = len(data)
    for i, p in enumerate(parts):
        if isinstance(p, tuple):
            name, capture = p[1], p[2]
            if name in ("num", "cas"):
                start = pos
                while pos < n and 0x30 <= data[pos] <= 0x39:
                    pos += 1
                if pos == n:
                    return PARTIAL, pos, caps, None
                if pos == start:
                    return MISMATCH, pos, caps, (i, 0)
                if capture:
                    caps[capture] = data[start:pos]
                continue
            if name == "any":
                while pos < n and data[pos] not in (0x0D, 0x0A):
                    pos += 1
                if pos == n:
                    return PARTIAL, pos, caps, None
                continue
            if name == "stats":
                while True:
                    rest = data[pos:pos + 5]
                    if len(rest) < 5 and b"STAT "[:len(rest)] == rest:
                        return PARTIAL, pos, caps, None
                    if rest != b"STAT ":
                        break
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        return PARTIAL, pos, caps, None
                    pos = eol + 2
                continue
            lit = caps.get(name, env.get(name))
            if lit is None:
                return MISMATCH, pos, caps, (i, 0)
        else:
            lit = p
        chunk = data[pos:pos + len(lit)]
        if chunk != lit[:len(chunk)]:
            k = next(k for k in range(len(chunk)) if chunk[k] != lit[k])
            return MISMATCH, pos + k, caps, (i, k)
        if len(chunk) < len(lit):
            return PARTIAL, n, caps, None
        pos += len(lit)
    return FULL, pos, caps, None


def expected_from(parts, env, fail):
    """The expected text from a mismatch on (part index, offset) on."""
    i, k = fail
    p = parts[i]
    if isinstance(p, tuple) and p[1] in _PLACEHOLDERS:
        return render_expect(parts[i:], env)
    lit = p if isinstance(p, bytes) else env.get(p[1], b"")
    return escape(lit[k:]) + render_expect(parts[i + 1:], env)


def render_expect(parts, env=None):
    out = []
    for p in parts:
        if isinstance(p, tuple):
            if env and p[1] in env:
                out.append(env[p[1]].decode("latin-1"))
            else:
                out.append("{%s%s}" % (p[1], ":" + p[2] if p[2] else ""))
        else:
            out.append(escape(p))
    return "".join(out)


def escape(data):
    out = []
    for b in data:
        c = chr(b)
        if c == "\r":
            out.append("\\r")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\\":
            out.append("\\\\")
        elif c == "{":
            out.append("\\x7b")
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def _clip(s, limit=600):
    return s if len(s) <= limit else s[:limit] + "...(%d more chars)" % (len(s) - limit)


class ReplayFailure(AssertionError):
    pass


# ---------------------------------------------------------------------------------------------
# Replay


class _Conn:
    """One connection: a sender thread and a deadline-bounded receiver, so a large pipeline
    can never deadlock against the server's full send buffer."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=REPLY_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The sender thread has its own socket object (same connection) so the reader's
        # changing timeouts never apply to a send in progress.
        self.send_sock = self.sock.dup()
        self.send_sock.settimeout(REPLY_TIMEOUT * 4)
        self.buf = b""
        self.eof = False
        self.send_error = None
        self._sender = None

    def close(self):
        if self._sender is not None:
            self._sender.join(REPLY_TIMEOUT)
        for sock in (self.send_sock, self.sock):
            try:
                sock.close()
            except OSError:
                pass

    def send_chunks(self, chunks, pause):
        """Sends the chunks in a background thread, sleeping `pause(i)` seconds after chunk i."""
        self.wait_sent()

        def run():
            try:
                for i, c in enumerate(chunks):
                    self.send_sock.sendall(c)
                    d = pause(i)
                    if d:
                        time.sleep(d)
            except OSError as e:  # the server may close first; the replies tell
                self.send_error = e

        self._sender = threading.Thread(target=run, daemon=True)
        self._sender.start()

    def wait_sent(self):
        if self._sender is not None:
            self._sender.join(REPLY_TIMEOUT * 4)
            if self._sender.is_alive():
                raise ReplayFailure("sending did not finish in time")
            self._sender = None

    def recv_some(self, deadline):
        """Appends what arrives before the deadline to buf. False on timeout or EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True


def _expect(conn, parts, env, what, expect_close=False, timeout=REPLY_TIMEOUT):
    """Reads until buf matches parts; consumes it; updates env with captures."""
    deadline = time.monotonic() + timeout
    while True:
        status, consumed, caps, fail = match(parts, conn.buf, env)
        where = consumed
        if status == FULL:
            break
        if status == MISMATCH:
            # Let a little more arrive so the message shows the whole wrong reply.
            end = time.monotonic() + 0.2
            while conn.recv_some(end):
                pass
            head = escape(conn.buf[max(0, where - 80):where])
            raise ReplayFailure(
                "%s: reply differs at byte %d (after ...%s)\n  expected: %s\n  actual:   %s" % (
                    what, where, head, _clip(expected_from(parts, env, fail), 300),
                    _clip(escape(conn.buf[where:]), 300)))
        if not conn.recv_some(deadline):
            why = "connection closed" if conn.eof else "timed out after %.1fs" % timeout
            if conn.send_error is not None:
                why += " (sending failed: %s)" % conn.send_error
            raise ReplayFailure(
                "%s: %s before the reply was complete\n  expected: %s\n  actual:   %s" % (
                    what, why, _clip(render_expect(parts, env)), _clip(escape(conn.buf))))
    env.update(caps)
    conn.buf = conn.buf[consumed:]
    if expect_close:
        end = time.monotonic() + timeout
        while conn.recv_some(end):
            pass
        if not conn.eof:
            raise ReplayFailure("%s: the server did not close the connection" % what)
    if conn.buf:
        raise ReplayFailure("%s: unexpected extra reply bytes: %s" % (
            what, _clip(escape(conn.buf))))


def _request_bytes(parts, env):
    out = b""
    for p in parts:
        out += env[p[1]] if isinstance(p, tuple) else p
    return out


def _batches(golden, mode):
    """Groups segments into the units sent at once: one per segment for whole/chunked; for
    pipelined, as many as possible (a request may not use a value captured in its batch)."""
    if mode != "pipelined":
        return [[s] for s in golden.segments]
    batches = []
    cur = []
    caps = set()
    for seg in golden.segments:
        if cur and (seg.uses_vars() & caps):
            batches.append(cur)
            cur, caps = [], set()
        cur.append(seg)
        caps |= seg.captures()
        if seg.sleep or seg.barrier:
            batches.append(cur)
            cur, caps = [], set()
    if cur:
        batches.append(cur)
    return batches


def _chunk(data, rng, budget):
    """Splits data into small random pieces: 1..16 bytes for the first 4 KiB, then larger."""
    chunks = []
    i = 0
    while i < len(data):
        if i < 4096 and budget[0] > 0:
            size = rng.choice((1, 1, 2, 3, 4, 5, 7, 8, 11, 13, 16))
            budget[0] -= 1
        else:
            size = rng.randint(1, 65536)
        chunks.append(data[i:i + size])
        i += size
    return chunks


def replay(golden, address, mode, seed=1, timeout=REPLY_TIMEOUT):
    """Replays one golden file on one fresh connection. Raises ReplayFailure."""
    rng = random.Random("%s/%s/%d" % (golden.name, mode, seed))
    env = {}
    budget = [400]  # chunks sent with a pause between them, per file
    conn = _Conn(address)
    try:
        batches = _batches(golden, mode)
        for bi, batch in enumerate(batches):
            data = b"".join(_request_bytes(s.request, env) for s in batch)
            last = bi == len(batches) - 1
            where = "%s [%s] line %d" % (golden.name, mode, batch[0].lineno)
            if data:
                if mode == "chunked":
                    chunks = _chunk(data, rng, budget)

                    # Pause after the small pieces so they arrive as separate reads.
                    def pause(i, chunks=chunks):
                        return 0.0005 if i < len(chunks) - 1 and len(chunks[i]) <= 16 else 0.0
                    conn.send_chunks(chunks, pause)
                else:
                    conn.send_chunks([data], lambda i: 0.0)
            parts = []
            for s in batch:
                parts += s.expect
            parts = _merge(parts)
            _expect(conn, parts, env, where, expect_close=last and golden.expects_close,
                    timeout=timeout)
            conn.wait_sent()
            if batch[-1].sleep:
                time.sleep(batch[-1].sleep)
        # Nothing more may arrive after the last expected byte.
        if not golden.expects_close:
            end = time.monotonic() + QUIET_AFTER_END
            while conn.recv_some(end):
                pass
            if conn.buf:
                raise ReplayFailure("%s [%s]: unexpected extra reply bytes at the end: %s" % (
                    golden.name, mode, _clip(escape(conn.buf))))
            if conn.eof:
                raise ReplayFailure("%s [%s]: the server closed the connection" % (
                    golden.name, mode))
    finally:
        conn.close()


def replay_on_fresh_server(golden, mode, seed=1):
    """Starts a fresh server of the selected kind, replays, stops it. Returns None or the
    failure text (with the server's output when it died)."""
    try:
        server = harness.start_server()
    except harness.ServerError as e:
        return "%s [%s]: could not start the server: %s" % (golden.name, mode, e)
    try:
        replay(golden, server.address, mode, seed)
        if not server.alive():
            return "%s [%s]: the server exited (code %s)\n%s" % (
                golden.name, mode, server.proc.returncode, server.output_tail())
        return None
    except (ReplayFailure, OSError) as e:
        msg = str(e)
        if not server.alive():
            msg += "\nthe server exited (code %s)\n%s" % (server.proc.returncode,
                                                          server.output_tail())
        return msg
    finally:
        server.cleanup_in_background()


def run_all(goldens, modes, seed=1, jobs=4):
    """Yields (golden, mode, failure text or None) for every pair, in order, running up to
    `jobs` replays at once (each has its own server, so they are independent)."""
    pairs = [(g, m) for g in goldens for m in modes]
    # Start the ones that sleep first so they overlap with everything else.
    order = sorted(range(len(pairs)), key=lambda i: -sum(s.sleep for s in pairs[i][0].segments))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {}
        for i in order:
            g, m = pairs[i]
            futures[i] = pool.submit(replay_on_fresh_server, g, m, seed)
        try:
            for i, (g, m) in enumerate(pairs):
                yield g, m, futures[i].result()
        finally:
            harness.reap_all()


def record(path):
    """Prints the transcript of `path` with the replies the server actually gives, one `< `
    line per reply line (an authoring aid: placeholders must still be put in by hand)."""
    golden = parse_golden(path)
    server = harness.start_server()
    try:
        conn = _Conn(server.address)
        for seg in golden.segments:
            data = _request_bytes(seg.request, {}) if not seg.uses_vars() else None
            if data is None:
                print("# (segment at line %d uses captured values; skipped)" % seg.lineno)
                continue
            conn.send_chunks([data], lambda i: 0.0)
            conn.wait_sent()
            end = time.monotonic() + 0.3
            while conn.recv_some(end):
                end = time.monotonic() + 0.3
            print("> " + escape(data))
            got, conn.buf = conn.buf, b""
            for line in got.splitlines(keepends=True):
                print("< " + escape(line))
            if conn.eof:
                print("< {close}")
                break
            print()
            if seg.sleep:
                time.sleep(seg.sleep)
        conn.close()
    finally:
        server.cleanup()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=harness.SERVERS,
                    default=os.environ.get("PETRACACHE_TEST_SERVER", "petracache"))
    ap.add_argument("--mode", choices=MODES, action="append",
                    help="replay mode (repeatable; default: all)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the chunked mode's splits")
    ap.add_argument("--jobs", type=int, default=6,
                    help="replays run at once, each on its own server (default 6)")
    ap.add_argument("--record", action="store_true",
                    help="print the replies the server gives instead of checking")
    ap.add_argument("files", nargs="*", help="golden files (default: tests/golden/*.golden)")
    args = ap.parse_args(argv)
    harness.set_server_kind(args.server)
    reason = harness.target_unavailable_reason()
    if reason:
        print("golden_replay: cannot run: %s" % reason, file=sys.stderr)
        return 2
    if args.record:
        for f in args.files:
            record(f)
        return 0
    goldens = load_goldens(args.files)
    modes = args.mode or list(MODES)
    passed = failed = 0
    for g, mode, err in run_all(goldens, modes, args.seed, args.jobs):
        if err:
            failed += 1
            print("FAIL %s [%s]\n%s\n" % (g.name, mode, err))
        else:
            passed += 1
            print("ok   %s [%s]" % (g.name, mode))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
