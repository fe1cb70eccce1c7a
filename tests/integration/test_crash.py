"""petracache only: crash consistency under kill -9, in each durability mode.

Several writer connections pipeline set/delete/incr on their own keys (so each key's
operations have one order: its connection's) and record every acknowledged operation. The
server is SIGKILLed at a random moment, restarted on the same db_path, and every key is read:

* `wal` and `sync`: each key holds its latest acknowledged state, or the state after one of
  the operations that were sent but not yet acknowledged when the server died (they may or
  may not have landed, in order). So every acknowledged write is there with its latest
  value, and no acknowledged delete is undone.
* `none`: writes since the last memtable flush may be lost, but whatever is there is a state
  that really was written (value and flags match one the key had; set values carry their
  own CRC in the flags, so a torn value shows), and the server starts.

After the last kill every mode is also stopped cleanly (SIGTERM) and must come back with
exactly its acknowledged state. Default run: 10 kills per mode (PETRACACHE_CRASH_KILLS=N for
more). Each mode prints a summary line (kills, acknowledged writes, keys checked, bytes
lost); docs/reliability.md quotes them.
"""

import os
import random
import threading
import time
import unittest
import zlib

import faults_util as fu
import harness

KILLS = int(os.environ.get("PETRACACHE_CRASH_KILLS", "10"))
WRITERS = 4
SET_KEYS = 120      # per writer
COUNTERS = 8        # per writer
STORAGE = {"write_buffer_size": "1MiB"}  # memtable flushes happen during the run


def _crc_flags(value):
    return zlib.crc32(value) & 0xFFFFFFFF


def _apply(op, state):
    """The state of a key after op, from state (None = absent, else (flags, value))."""
    kind = op[0]
    if kind == "set":
        return (op[2], op[3])
    if kind == "delete":
        return None
    if state is None:                       # incr on a missing key: NOT_FOUND
        return None
    return (state[0], b"%d" % ((int(state[1]) + op[2]) % 2 ** 64))


class KeyModel:
    """What one writer knows about its keys."""

    def __init__(self):
        self.acked = {}      # key -> state after the latest acknowledged op
        self.pending = {}    # key -> [ops sent, not acknowledged], in order
        self.history = {}    # key -> every state the key may have had (for `none`)
        self.acked_ops = 0
        self.acked_bytes = 0

    def send(self, op):
        self.pending.setdefault(op[1], []).append(op)

    def ack(self, op, state):
        key = op[1]
        q = self.pending[key]
        assert q and q[0] is op, "replies out of order"
        q.pop(0)
        self.acked[key] = state
        self.history.setdefault(key, set()).add(state)
        self.acked_ops += 1
        if state is not None and op[0] == "set":
            self.acked_bytes += len(state[1])

    def candidates(self, key):
        """Acceptable states after a crash: the acknowledged one, or after any prefix of the
        operations in flight."""
        state = self.acked.get(key)
        out = [state]
        for op in self.pending.get(key, []):
            state = _apply(op, state)
            out.append(state)
        return out

    def possible_ever(self, key):
        out = set(self.history.get(key, set())) | {None}
        out.update(self.candidates(key))
        return out

    def settle(self, observed):
        """After verification the observed states are the new truth; nothing is in flight."""
        for key, state in observed.items():
            self.acked[key] = state
            self.history.setdefault(key, set()).add(state)
        self.pending = {}


class Writer(threading.Thread):
    def __init__(self, wid, address, model, seed, round_no, stop):
        super().__init__(daemon=True)
        self.wid = wid
        self.address = address
        self.model = model
        self.rng = random.Random(seed)
        self.round_no = round_no
        self.stop = stop
        self.error = None
        self.seq = 0

    def make_op(self):
        rng = self.rng
        self.seq += 1
        r = rng.random()
        if r < 0.7:
            key = b"s:%d:%d" % (self.wid, rng.randrange(SET_KEYS))
            head = b"%d:%d:%d:" % (self.wid, self.round_no, self.seq)
            value = head + rng.randbytes(rng.choice([0, 10, 100, 1000, 3000, 20000]))
            return ("set", key, _crc_flags(value), value)
        if r < 0.8:
            return ("delete", b"s:%d:%d" % (self.wid, rng.randrange(SET_KEYS)))
        key = b"c:%d:%d" % (self.wid, rng.randrange(COUNTERS))
        if r < 0.85:
            return ("set", key, 7, b"%d" % rng.randrange(10 ** 6))
        return ("incr", key, rng.randrange(1, 1000))

    @staticmethod
    def encode(op):
        if op[0] == "set":
            return b"set %s %d 0 %d\r\n%s\r\n" % (op[1], op[2], len(op[3]), op[3])
        if op[0] == "delete":
            return b"delete %s\r\n" % op[1]
        return b"incr %s %d\r\n" % (op[1], op[2])

    def state_from_reply(self, op, line):
        kind = op[0]
        if kind == "set" and line == b"STORED\r\n":
            return (op[2], op[3])
        if kind == "delete" and line in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
            return None
        if kind == "incr":
            if line == b"NOT_FOUND\r\n":
                return None
            if line[:-2].isdigit():
                return (7, line[:-2])
        raise AssertionError("writer %d: %r got %r" % (self.wid, op[:2], line))

    def run(self):
        try:
            with harness.RawClient(self.address, timeout=10) as c:
                while not self.stop.is_set():
                    batch = [self.make_op() for _ in range(self.rng.randrange(1, 30))]
                    for op in batch:
                        self.model.send(op)
                    c.send(b"".join(self.encode(op) for op in batch))
                    for op in batch:
                        line = c.read_line(timeout=10)
                        state = self.state_from_reply(op, line)
                        if op[0] == "incr" and state is not None:
                            expect = _apply(op, self.model.acked.get(op[1]))
                            if expect != state:
                                raise AssertionError("incr %r: %r, model says %r" % (
                                    op[1], state, expect))
                        self.model.ack(op, state)
        except (harness.ConnectionClosed, harness.ReadTimeout, OSError):
            pass  # the kill
        except AssertionError as e:
            self.error = e


def _all_keys():
    keys = []
    for w in range(WRITERS):
        keys += [b"s:%d:%d" % (w, i) for i in range(SET_KEYS)]
        keys += [b"c:%d:%d" % (w, i) for i in range(COUNTERS)]
    return keys


def _owner(key):
    return int(key.split(b":")[1])


class CrashTest(fu.PetracacheFaultTest):

    def read_all(self, server):
        with harness.connect(server, timeout=30) as c:
            found, errors = fu.get_many_checked(c, _all_keys())
        self.assertEqual(errors, [], "reads failed after restart")
        return {k: found.get(k) for k in _all_keys()}

    def run_mode(self, mode):
        seed = int(os.environ.get("PETRACACHE_CRASH_SEED", time.time_ns() % 1000000))
        rng = random.Random(seed)
        server = fu.make_petracache(durability=mode, storage=STORAGE)
        self.addCleanup(server.cleanup)
        fu.start_checked(server)
        models = [KeyModel() for _ in range(WRITERS)]
        kills = checked = lost_keys = lost_bytes = survived = in_flight_landed = 0
        started = time.monotonic()
        for round_no in range(KILLS):
            stop = threading.Event()
            writers = [Writer(w, server.address, models[w], rng.getrandbits(32), round_no, stop)
                       for w in range(WRITERS)]
            for t in writers:
                t.start()
            time.sleep(rng.uniform(0.1, 0.8))
            fu.kill9(server)
            kills += 1
            stop.set()
            for t in writers:
                t.join(20)
            self.assertFalse(any(t.is_alive() for t in writers), "a writer did not stop")
            for t in writers:
                self.assertIsNone(t.error, "seed %d: %s" % (seed, t.error))
            try:
                fu.restart_after_kill(server)
            except harness.ServerError as e:
                self.fail("%s mode, kill %d (seed %d): petracache did not come back: %s" % (
                    mode, kills, seed, e))
            observed = self.read_all(server)
            problems = []
            for key, got in observed.items():
                model = models[_owner(key)]
                if got is not None and key.startswith(b"s:") and got[0] != _crc_flags(got[1]):
                    problems.append("%r: torn value (flags %d, crc %d)" % (
                        key, got[0], _crc_flags(got[1])))
                    continue
                if got is not None and key.startswith(b"c:") and \
                        (got[0] != 7 or not got[1].strip().isdigit()):
                    problems.append("%r: corrupt counter %r" % (key, got))
                    continue
                acked = model.acked.get(key)
                if mode in ("wal", "sync"):
                    cands = model.candidates(key)
                    checked += 1
                    if got not in cands:
                        problems.append("%r: got %s, acknowledged %s, in flight %d ops" % (
                            key, _short(got), _short(acked), len(model.pending.get(key, []))))
                        if acked is not None and got != acked:
                            lost_bytes += len(acked[1])
                    elif got != acked:
                        in_flight_landed += 1
                else:
                    checked += 1
                    if got not in model.possible_ever(key):
                        problems.append("%r: got %s, which was never written" % (key, _short(got)))
                    if acked is not None:
                        if got == acked or got in model.candidates(key):
                            survived += 1
                        else:
                            lost_keys += 1
                            lost_bytes += len(acked[1])
            self.assertEqual(problems[:10], [], "%s mode, kill %d (seed %d): %d keys wrong" % (
                mode, kills, seed, len(problems)))
            for w, model in enumerate(models):
                model.settle({k: v for k, v in observed.items() if _owner(k) == w})
        # A clean stop loses nothing in any mode.
        code = server.stop()
        self.assertEqual(code, 0, "SIGTERM exit code %s\n%s" % (code, server.output_tail()))
        fu.start_checked(server)
        after = self.read_all(server)
        for key, got in after.items():
            self.assertEqual(got, models[_owner(key)].acked.get(key),
                             "%s mode: %r changed across a clean restart" % (mode, key))
        acked_ops = sum(m.acked_ops for m in models)
        acked_bytes = sum(m.acked_bytes for m in models)
        line = ("crash[%s]: %d kills, %d acknowledged writes (%.1f MiB set), %d key checks, "
                "%d in-flight writes found applied, %s, %.1fs, seed %d" % (
                    mode, kills, acked_ops, acked_bytes / 2 ** 20, checked, in_flight_landed,
                    ("bytes lost: %d" % lost_bytes) if mode != "none" else
                    "keys lost/kept (allowed in none): %d/%d" % (lost_keys, survived),
                    time.monotonic() - started, seed))
        self.summaries.append(line)
        self.assertGreater(acked_ops, 100 * KILLS // 10, "too few writes acknowledged")
        if mode != "none":
            self.assertEqual(lost_bytes, 0)

    def test_wal(self):
        self.run_mode("wal")

    def test_sync(self):
        self.run_mode("sync")

    def test_none(self):
        self.run_mode("none")


def _short(state):
    if state is None:
        return "absent"
    return "(flags %d, %d bytes %r...)" % (state[0], len(state[1]), state[1][:24])


if __name__ == "__main__":
    unittest.main()
