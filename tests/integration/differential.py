#!/usr/bin/python3
"""Differential testing: seeded random command sequences sent to Debian's memcached 1.6.18
and to petracache side by side; the replies must match byte for byte, except CAS values
(in VALUE lines and in the c<cas> return flag of meta replies), the remaining TTLs of meta
replies (t<n>: within TTL_SLACK seconds, since the clocks tick), the text after
`VERSION 1.6.18`, and `STAT` lines (names and values differ by design).

  # the long run (each seed is one sequence of ~40-160 commands on a fresh connection)
  PETRACACHE_BIN=build/src/server/petracache /usr/bin/python3 tests/integration/differential.py --seeds 1000
  # one seed, printing every request and both replies
  ... differential.py --seed 17 --verbose
  # check the generator and driver themselves: memcached against a second memcached
  ... differential.py --seeds 200 --self-check

The generator covers every command the two servers share (get gets gat gats set add replace
append prepend cas delete incr decr touch flush_all verbosity version stats quit, and the meta
commands mn mg ms md ma me), valid and invalid: bad numbers, 251-byte keys, bad data chunks,
values at and over the item size limit (both servers run with a 64 KiB limit: memcached
`-I 64k`, petracache `item_size_max`), noreply, binary values, edge numbers (2^32, 2^64-1,
negative). Commands go in pipelined batches, some of them split at random byte boundaries.

Meta commands: mg with v f t s c k O q T N R u b and the flags it ignores; ms with its modes
(MS ME MR MA MP) and F T C I q k c O b; md with C I T q k O b; ma with its modes (MI M+ MD M-)
and D N J C T q v t c k O b; mn. Keys from the same pool, sometimes in base64 with b. Invalid:
unknown, repeated (a byte >= 0x7f counts as one) and malformed flags (Tx, Cx, MXX, ...),
opaques over 32 bytes, too many flags, keys that are too long or not base64, ms with a bad or
missing length (its data block then runs as commands, so it is lines of junk) or an error
after the length (the block is swallowed), bad data chunks and too-large values. `me` is only
sent where both servers agree: on keys nothing stores (EN) and its format errors.

It leaves out what docs/protocol.md lists as deliberate differences (`delete <key> <n>` with
n != 0, lease-*/metaget, mg's h and l flags, me's reply on a hit), what depends on time
(delayed flush_all, exptimes and meta TTLs that expire within the run, an mg R<ttl> close to
an item's remaining TTL) and what depends on memcached's read boundaries (non-get lines over
2048 bytes; a get with a 251-byte key always starts a new batch: memcached drops unsent
earlier replies then). A t<n> of 2^31 or more is memcached printing, unsigned, the TTL of an
item that a T in the same request expired (1 minus its clock, which counts from its start):
only that both print such a number is compared. One thing of memcached's depends on memory:
incr/decr/ma on a stored number >= 2^63 look for a '-' past the value's end (strchr over bytes
that are not NUL-terminated), so memcached may call it non-numeric after earlier seeds left
such bytes behind; that shows as an unconfirmed divergence.

CAS tokens: a `cas` (and the C<cas> of ms, md and ma) either uses the token this connection
last saw for the key (substituted per server, since the two number differently) or a token
no server hands out (0, >= 2^60) or an invalid one. Tokens are captured from gets/gats
replies and from meta replies that carry both c<cas> and k<key> (the key, base64-decoded
when a `b` flag follows it): without k a reply does not say whose CAS it is. A command that
uses a captured token starts a new batch, and so does an incr/decr/ma on a key that a
retrieval (mg included: it holds the item until its reply is sent) returned earlier in the
batch.

Batches end with a `version` sentinel; a batch is complete when its VERSION replies (the
sentinel's included) have arrived. On a divergence the sequence is shrunk (ddmin over the
commands, each trial on a fresh connection after `flush_all`), confirmed on fresh servers,
printed, and written as a candidate golden file (memcached's replies are the expected ones)
to --out (default /tmp/petracache-diff).
"""

import argparse
import base64
import os
import random
import re
import select
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ITEM_SIZE_MAX = 64 * 1024
# memcached refuses -I below its slab chunk size (512 KiB by default), so lower that too, to
# the item size limit itself: no item is then "chunked" (memcached never does incr/decr on a
# chunked item, see test_differential.IncrOnLargeItemTest).
# no_lru_maintainer: with the segmented LRU, a get queues an asynchronous LRU bump that holds
# a reference to the item for a while, and memcached then does not update an incr/decr result
# in place (no space padding of a shorter number): replies would depend on timing.
MEMCACHED_ARGS = ("-I", "64k", "-o", "slab_chunk_max=65536,no_lru_maintainer", "-m", "1024")
# A small write buffer: multi-gets larger than it are answered in pieces (resumed as the
# client reads), a path the replies must not reveal.
PETRACACHE_CONFIG = {"server": {"write_buffer_size": "64KiB"},
                     "storage": {"item_size_max": str(ITEM_SIZE_MAX),
                                 "write_buffer_size": "8MiB",
                                 "block_cache_size": "32MiB"}}

SEGMENT_TIMEOUT = 10.0  # a batch's replies must arrive within this
QUIET_TIMEOUT = 3.0     # ... and a batch stalls if nothing arrives for this long


def item_limit(key, flags):
    """The largest value memcached stores for key/flags: it counts 48 bytes of item header,
    8 of CAS, the key and its NUL, 4 bytes of non-zero flags and the value's \\r\\n."""
    return ITEM_SIZE_MAX - 56 - (len(key) + 1) - (4 if flags & 0xFFFFFFFF else 0) - 2


# ---------------------------------------------------------------------------------------------
# Generator


class CasRef:
    """Placeholder for the CAS value the connection last saw for `key` (per server)."""

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return "CasRef(%r)" % self.key


class MetaKey:
    """A meta command's key: the token sent, the key it names (None when the command fails on
    it), whether it is base64 (the b flag), and why it fails ("long", "b64" or None)."""

    __slots__ = ("token", "raw", "b", "why")

    def __init__(self, token, raw, b, why):
        self.token, self.raw, self.b, self.why = token, raw, b, why


class Op:
    """One request: its bytes (with CasRef placeholders), how many VERSION replies it
    produces, and where batches break."""

    __slots__ = ("parts", "versions", "sync", "brk", "split", "quit", "what", "reads",
                 "arith")

    def __init__(self, parts, what, versions=0, sync=False, quit=False, reads=(), arith=None):
        self.parts = parts
        self.what = what
        self.reads = tuple(reads)  # keys a retrieval returns (memcached holds their items)
        self.arith = arith         # key of an incr/decr
        self.versions = versions
        self.sync = sync       # must start a batch of its own (reads all earlier replies)
        self.brk = False       # starts a new batch (set by the sequence builder)
        self.split = False     # if it starts a batch: send that batch in random pieces
        self.quit = quit

    def uses_cas(self):
        return any(isinstance(p, CasRef) for p in self.parts)

    def render(self, caps):
        return b"".join(caps.get(p.key, b"0") if isinstance(p, CasRef) else p
                        for p in self.parts)

    def display(self):
        """The request with each CAS placeholder shown as <cas of KEY>."""
        return b"".join(b"<cas of %s>" % p.key if isinstance(p, CasRef) else p
                        for p in self.parts)

    def __repr__(self):
        return "Op(%s %r)" % (self.what, self.display()[:120])


FLAGS_VALID = [b"0"] * 6 + [b"1", b"42", b"65535", b"2147483648", b"4294967295",
                            b"4294967296", b"4294967303", b"18446744073709551615", b"00",
                            b"007", b"-0"]
FLAGS_INVALID = [b"-1", b"abc", b"1a", b"0x10", b"18446744073709551616", b"4x"]
# Every one of these either never expires during a run or is already expired: 0 never;
# negatives, 32-bit narrowings to negatives and absolute times in the past expire at once;
# 3600 / 2592000 relative and 2000000000 (2033) absolute outlive any run.
EXPTIME_VALID = [b"0"] * 24 + [b"-1", b"-1000", b"3600", b"2592000", b"2592001",
                              b"1000000000", b"2000000000", b"4294967295", b"2147483648",
                              b"4294970896", b"00", b"-0"]
EXPTIME_INVALID = [b"abc", b"1a", b"0x1", b"9223372036854775808", b"--1"]
LENGTH_INVALID = [b"-1", b"abc", b"1a", b"2147483647", b"-2147483648", b"0x1"]
DELTAS = [b"1"] * 10 + [b"2", b"3", b"7", b"10", b"1000"] + [b"0", b"5", b"100", b"4294967296", b"18446744073709551615",
                       b"18446744073709551614", b"9223372036854775808", b"00", b"-1",
                       b"abc", b"18446744073709551616", b"1a", b"+1", b"0x5"]
NUMERIC_VALUES = [b"0", b"1", b"9", b"10", b"99", b"100", b"1000", b"18446744073709551615",
                  b"18446744073709551614", b" 12", b"  7", b"12 ", b"-12", b"abc", b"",
                  b"007", b"4294967296", b"18446744073709551616", b"1a", b"12\r\n"]
CAS_WRONG = [b"0", b"18446744073709551615", b"1152921504606846976", b"9999999999999999999"]
CAS_INVALID = [b"abc", b"-1", b"18446744073709551616", b"1a"]

BASE_KEYS = [b"a", b"b", b"k1", b"ctr", b"n", b"key:with:colons", b"\xc3\xa9t\xc3\xa9",
             b"K" * 250, b"k\x01x", b"k\x7f", b"k\tt", b"_"]
STORAGE_CMDS = [b"set"] * 5 + [b"add", b"add", b"replace", b"replace", b"append", b"prepend"]

# Meta commands. TTLs for T and N: EXPTIME_VALID's values (none expires during a run), with
# more far-future ones, so that t and R see items with a TTL. R (win the recache token when
# the remaining TTL is below it) must stay far from every TTL an item can have (none, 3600,
# 2592000, the year 2033): the remaining TTL ticks, and an R at the boundary would depend on
# the clock.
META_TTL = [b"0"] * 10 + [b"3600", b"2592000", b"2000000000", b"4294970896"] * 2 + [
    b"-1", b"-1000", b"1000000000", b"2592001", b"4294967295", b"2147483648", b"00", b"-0"]
META_RECACHE = [b"0", b"-1", b"30", b"100", b"1000", b"7200", b"5000000", b"2100000000"]
# (2^64-1 rarely: see the note on numbers >= 2^63 in the docstring)
META_INITIAL = [b"0", b"0", b"0", b"1", b"7", b"42", b"100", b"00", b"99", b"18446744073709551615"]
META_NUMBERS = [b"0", b"1", b"9", b"10", b"99", b"100", b"1000", b"4294967296", b" 12", b"007"]
# Flags no meta command of 1.6.18 knows (h and l are left out: mg's h/l are a deliberate
# difference); \xff counts as a repeated flag.
META_UNKNOWN_FLAGS = [b"Z", b"x", b"E", b"S", b"~", b"!", b"Y", b"a", b"1", b"\xff"]
META_BAD_TOKENS = [b"Tx", b"T", b"T1a", b"T9223372036854775808", b"Nx", b"N", b"Rx", b"Cx",
                   b"C-1", b"C18446744073709551616", b"Fx", b"F-1", b"MXX", b"M", b"Jx", b"Dx",
                   b"D-1"]
# Not base64 (bad characters, missing padding).
META_BAD_B64 = [b"YWJ", b"YQ", b"!!!!", b"YQ=", b"===="]
# Keys nothing stores: `me` only ever sees misses (its hit line is a deliberate difference).
ME_KEYS = [b"me:none", b"me-miss", b"\xc3\xa9me"]
META_JUNK = [b"mg\r\n", b"mg \r\n", b"ms\r\n", b"md\r\n", b"ma\r\n", b"ms a\r\n",
             b"mz a\r\n", b"MG a\r\n", b"Mg a v\r\n", b"MN\r\n", b"mgg a\r\n", b"m a\r\n"]


def _junk_line(rng):
    """A line that is no command (it starts with "zz") and has no \\r or \\n."""
    n = rng.randrange(0, 30)
    return b"zz" + bytes(rng.choice(b"abcxyz0123456789 :_-") for _ in range(n))


def _junk_data(rng):
    """Data of a storage line the servers reject: read as command lines, each an ERROR."""
    return b"".join(_junk_line(rng) + b"\r\n" for _ in range(rng.randrange(1, 3)))


class Generator:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        rng = self.rng
        self.keys = list(BASE_KEYS)
        for _ in range(rng.randrange(1, 3)):
            n = rng.randrange(1, 13)
            alphabet = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
            self.keys.append(bytes(rng.choice(alphabet) for _ in range(n)))
        self.seed = seed

    # -- pieces --

    def key(self):
        rng = self.rng
        if rng.random() < 0.75:
            return rng.choice(self.keys[:5])
        return rng.choice(self.keys)

    def long_key(self):
        return b"L" * self.rng.choice([251, 252, 300])

    def noreply(self, p=0.15):
        return b" noreply" if self.rng.random() < p else b""

    def _value(self, key, flags):
        rng = self.rng
        limit = item_limit(key, flags)
        r = rng.random()
        if r < 0.30:
            size = rng.randrange(0, 4)
        elif r < 0.70:
            size = rng.randrange(4, 80)
        elif r < 0.85:
            size = rng.randrange(80, 3000)
        elif r < 0.92:
            size = rng.randrange(3000, limit)
        else:
            size = rng.choice([limit, limit - 1])
        kind = rng.random()
        if kind < 0.3:
            return rng.randbytes(size)
        if kind < 0.5:
            pat = rng.choice([b"\r\nEND\r\n", b"VALUE a 0 1\r\n", b"\r\n", b"\0", b"STORED\r\n",
                              b"VERSION 1\r\n"])
            return (pat * (size // len(pat) + 1))[:size]
        if kind < 0.7:
            return bytes([rng.randrange(0x61, 0x7B)]) * size
        return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))

    def value(self, key, flags):
        v = self._value(key, flags)
        # memcached's incr/decr runs strtoull over the item's bytes, which are not
        # NUL-terminated: on a value of whitespace only it reads on into the next item's
        # memory. So no value is whitespace only.
        if v and not v.strip(b" \t\r\n\v\f"):
            v = b"x" + v[1:]
        return v

    @staticmethod
    def narrowed(flags):
        try:
            return int(flags) & 0xFFFFFFFF
        except ValueError:
            return 0

    # -- commands --

    def op_storage(self):
        rng = self.rng
        cmd = rng.choice(STORAGE_CMDS)
        key = self.key()
        flags = rng.choice(FLAGS_VALID)
        exptime = rng.choice(EXPTIME_VALID)
        if rng.random() < 0.25 and key in (b"n", b"ctr", b"a"):
            value = rng.choice(NUMERIC_VALUES)
        else:
            value = self.value(key, self.narrowed(flags))
        tail = self.noreply()
        if not tail and rng.random() < 0.05:
            tail = b" junk"  # one extra token that is not "noreply": still a valid command
        line = b"%s %s %s %s %d%s\r\n" % (cmd, key, flags, exptime, len(value), tail)
        return Op([line, value, b"\r\n"], cmd.decode())

    def cas_token(self, key):
        r = self.rng.random()
        if r < 0.7:
            return CasRef(key)
        if r < 0.9:
            return self.rng.choice(CAS_WRONG)
        return self.rng.choice(CAS_INVALID)

    def op_cas(self):
        """A cas, half the time right after a gets of its key (so its token can match)."""
        op = self._op_cas()
        if isinstance(op.parts[1], CasRef) and self.rng.random() < 0.5:
            key = op.parts[1].key
            return [Op([b"gets %s\r\n" % key], "gets", reads=[key]), op]
        return op

    def _op_cas(self):
        rng = self.rng
        key = self.key()
        flags = rng.choice(FLAGS_VALID)
        exptime = rng.choice(EXPTIME_VALID)
        value = self.value(key, self.narrowed(flags))
        token = self.cas_token(key)
        if isinstance(token, bytes) and token in CAS_INVALID:
            # The line is rejected: its data block is read as commands.
            data = _junk_data(rng)
            return Op([b"cas %s %s %s %d " % (key, flags, exptime, len(data)), token,
                       b"%s\r\n" % self.noreply(), data], "cas-badtoken")
        return Op([b"cas %s %s %s %d " % (key, flags, exptime, len(value)), token,
                   b"%s\r\n" % self.noreply(), value, b"\r\n"], "cas")

    def op_storage_bad_line(self):
        rng = self.rng
        cmd = rng.choice(STORAGE_CMDS + [b"cas"])
        key, flags, exptime, length = self.key(), b"0", b"0", b"3"
        extra = [b"1"] if cmd == b"cas" else []
        how = rng.choice(["flags", "exptime", "length", "key", "few", "many", "cas"])
        if how == "flags":
            flags = rng.choice(FLAGS_INVALID)
        elif how == "exptime":
            exptime = rng.choice(EXPTIME_INVALID)
        elif how == "length":
            length = rng.choice(LENGTH_INVALID)
        elif how == "key":
            key = self.long_key()
        fields = [cmd, key, flags, exptime, length] + extra
        if how == "few":
            fields = fields[:rng.randrange(1, len(fields))]
        elif how == "many":
            fields += [b"x", b"noreply"] if rng.random() < 0.5 else [b"1", b"2", b"3"]
        elif how == "cas":
            fields = [b"cas", key, b"0", b"0", b"3"] + (
                [rng.choice(CAS_INVALID)] if rng.random() < 0.7 else [])
        nr = self.noreply(0.2) if how not in ("few", "many") else b""
        line = b" ".join(fields) + nr + b"\r\n"
        return Op([line, _junk_data(rng)], "storage-bad-line-" + how)

    def op_bad_chunk(self):
        rng = self.rng
        cmd = rng.choice(STORAGE_CMDS)
        key = self.key()
        n = rng.randrange(0, 20)
        if rng.random() < 0.5:
            # Longer than declared: the two bytes after `n` are not \r\n.
            body = bytes(rng.choice(b"abcxyz") for _ in range(n + rng.randrange(1, 5)))
            data = body + b"\r\n"
        else:
            # Ends in \n only; one more byte completes the window, then \r\n resyncs.
            data = bytes(rng.choice(b"abcxyz") for _ in range(n)) + b"\nq\r\n"
        line = b"%s %s 0 0 %d%s\r\n" % (cmd, key, n, self.noreply(0.2))
        return Op([line, data], "bad-chunk")

    def op_too_large(self):
        rng = self.rng
        cmd = rng.choice(STORAGE_CMDS + [b"cas"])
        key = self.key()
        flags = rng.choice([b"0", b"0", b"1", b"4294967296"])
        limit = item_limit(key, self.narrowed(flags))
        size = rng.choice([limit + 1, limit + 2, limit + 4, limit + 5, limit + rng.randrange(1, 500),
                           2 * ITEM_SIZE_MAX, ITEM_SIZE_MAX])
        value = bytes([rng.randrange(0x61, 0x7B)]) * size
        cas = b" 0" if cmd == b"cas" else b""
        line = b"%s %s %s 0 %d%s%s\r\n" % (cmd, key, flags, size, cas, self.noreply(0.2))
        return Op([line, value, b"\r\n"], "too-large")

    def op_append_grow(self):
        """append/prepend that may push a value over the limit."""
        rng = self.rng
        key = rng.choice(self.keys[:5])
        size = rng.choice([ITEM_SIZE_MAX // 2, ITEM_SIZE_MAX // 3, 30000, 1000])
        value = bytes([rng.randrange(0x61, 0x7B)]) * size
        cmd = rng.choice([b"append", b"prepend"])
        return Op([b"%s %s 0 0 %d%s\r\n" % (cmd, key, size, self.noreply(0.1)), value, b"\r\n"],
                  "append-grow")

    def op_get(self):
        rng = self.rng
        cmd = rng.choice([b"get", b"get", b"gets", b"gets"])
        r = rng.random()
        if r < 0.6:
            keys = [self.key()]
        elif r < 0.9:
            keys = [self.key() for _ in range(rng.randrange(2, 6))]
        elif r < 0.97:
            keys = [self.key() for _ in range(rng.randrange(6, 41))]
        else:
            keys = [b"K" * 250] * rng.randrange(9, 14)  # a line over 2048 bytes
        return Op([cmd + b" " + b" ".join(keys) + b"\r\n"], cmd.decode(), reads=keys)

    def op_gat(self):
        rng = self.rng
        cmd = rng.choice([b"gat", b"gats"])
        exptime = rng.choice(EXPTIME_VALID) if rng.random() < 0.85 else rng.choice(EXPTIME_INVALID)
        keys = [self.key() for _ in range(rng.randrange(1, 5))]
        if rng.random() < 0.05:
            return Op([cmd + b" " + exptime + b"\r\n"], cmd.decode() + "-nokey")
        return Op([cmd + b" " + exptime + b" " + b" ".join(keys) + b"\r\n"], cmd.decode(),
                  reads=keys)

    def op_long_key_get(self):
        rng = self.rng
        cmd = rng.choice([b"get", b"gets", b"gat 0", b"gats 0"])
        keys = [self.key() for _ in range(rng.randrange(0, 3))]
        if rng.random() < 0.3:
            keys += [rng.choice(self.keys[:5])] * rng.randrange(5, 30)  # a reply of many pieces
        keys.insert(rng.randrange(0, len(keys) + 1), self.long_key())
        return Op([cmd + b" " + b" ".join(keys) + b"\r\n"], "long-key-get", sync=True,
                  reads=keys)

    def op_delete(self):
        rng = self.rng
        key = self.key()
        form = rng.choice([b"delete %s\r\n", b"delete %s\r\n", b"delete %s noreply\r\n",
                           b"delete %s 0\r\n", b"delete %s 0 noreply\r\n",
                           b"delete %s abc\r\n", b"delete %s 0 0\r\n", b"delete\r\n",
                           b"delete %s noreply x\r\n"])
        if b"%s" in form:
            if rng.random() < 0.05:
                key = self.long_key()
            return Op([form % key], "delete")
        return Op([form], "delete")

    def op_counter(self):
        """A number (or something almost a number) on a key that incr/decr use."""
        rng = self.rng
        key = rng.choice([b"n", b"ctr", b"n", b"ctr", b"a"])
        value = rng.choice(NUMERIC_VALUES)
        flags = rng.choice([b"0", b"0", b"5"])
        return Op([b"set %s %s 0 %d%s\r\n" % (key, flags, len(value), self.noreply(0.1)),
                   value, b"\r\n"], "set-number")

    def op_arith(self):
        rng = self.rng
        cmd = rng.choice([b"incr", b"decr"])
        r = rng.random()
        key = rng.choice([b"n", b"ctr"]) if r < 0.7 else b"missing" if r < 0.8 else self.key()
        if rng.random() < 0.04:
            key = self.long_key()
        if rng.random() < 0.04:
            return Op([cmd + b" " + key + b"\r\n"], "arith-few")
        return Op([b"%s %s %s%s\r\n" % (cmd, key, rng.choice(DELTAS), self.noreply())],
                  cmd.decode(), arith=key)

    def op_touch(self):
        rng = self.rng
        key = self.key()
        if rng.random() < 0.05:
            return Op([b"touch %s\r\n" % key], "touch-few")
        exptime = rng.choice(EXPTIME_VALID) if rng.random() < 0.85 else rng.choice(EXPTIME_INVALID)
        return Op([b"touch %s %s%s\r\n" % (key, exptime, self.noreply())], "touch")

    def op_flush(self):
        form = self.rng.choice([b"flush_all\r\n", b"flush_all 0\r\n", b"flush_all -1\r\n",
                                b"flush_all noreply\r\n", b"flush_all 0 noreply\r\n",
                                b"flush_all abc\r\n", b"flush_all -5 noreply\r\n"])
        return Op([form], "flush_all")

    def op_misc(self):
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return Op([b"version\r\n"], "version", versions=1)
        if r < 0.55:
            return Op([rng.choice([b"verbosity 1\r\n", b"verbosity 0\r\n", b"verbosity 0 noreply\r\n",
                                   b"verbosity\r\n", b"verbosity abc\r\n", b"verbosity 1 2\r\n",
                                   b"verbosity 1 2 3 4\r\n"])], "verbosity")
        if r < 0.75:
            return Op([b"stats" + rng.choice([b"", b" settings", b" items", b" slabs",
                                              b" sizes", b" reset", b" bogus", b" noreply",
                                              b" conns"]) + b"\r\n"], "stats")
        return Op([rng.choice([b"\r\n", b"GET a\r\n", b"Set a 0 0 1\r\n", b"foo\r\n", b"get\r\n",
                               b"gets\r\n", b"incr\r\n", b"touch\r\n", b"zz top\r\n",
                               b"shutdown\r\n", b"   \r\n", b"cas a 0 0 1\r\n", b"set\r\n",
                               b"get " + b"a " * 3 + b"\r\n", b"get  a\r\n", b"gat\r\n"])],
                  "junk")

    # -- meta commands --

    def meta_key(self, counters=False):
        """A key for a meta command: (token, raw key or None, b flag, why it fails). Mostly
        a key of the pool; sometimes its base64 with the b flag, a key that is too long, or
        (with b) one that is not base64."""
        rng = self.rng
        if counters and rng.random() < 0.7:
            raw = rng.choice([b"n", b"ctr", b"n", b"ctr", b"a", b"missing"])
        else:
            raw = self.key()
        r = rng.random()
        if r < 0.03:
            return MetaKey(self.long_key(), None, False, "long")
        if r < 0.13:
            token = base64.b64encode(raw)
            if len(token) > 250:
                return MetaKey(token, None, True, "long")
            return MetaKey(token, raw, True, None)
        if r < 0.15:
            return MetaKey(rng.choice(META_BAD_B64), None, True, "b64")
        return MetaKey(raw, raw, False, None)

    def opaque(self):
        """An opaque token: at most 32 bytes with its O, rarely longer (an error)."""
        rng = self.rng
        if rng.random() < 0.06:
            n = rng.randrange(32, 40)
        else:
            n = rng.choice([0, 1, 2, 4, 8, 31]) if rng.random() < 0.3 else rng.randrange(0, 32)
        return b"O" + bytes(rng.choice(b"abcxyz0123456789_-:") for _ in range(n))

    def meta_cas(self, raw):
        """C's value: the CAS this connection last saw for the key (when there is one), a
        CAS no server hands out, or 0."""
        if raw is not None and self.rng.random() < 0.7:
            return CasRef(raw)
        return self.rng.choice(CAS_WRONG)

    def meta_break(self, flags, ignored=()):
        """Breaks a flag list: an unknown or repeated flag, a bad token, an over-long opaque
        or too many flags. Returns (flags, how)."""
        rng = self.rng
        flags = list(flags)
        how = rng.choice(["unknown", "repeat", "token", "token", "opaque", "many"])
        if how == "unknown":
            flags.insert(rng.randrange(len(flags) + 1), rng.choice(META_UNKNOWN_FLAGS))
        elif how == "repeat":
            plain = [f for f in flags if isinstance(f, bytes)]
            if plain and rng.random() < 0.8:
                f = rng.choice(plain)
                flags.insert(rng.randrange(len(flags) + 1), f[:1] + rng.choice([b"", b"5", f[1:]]))
            else:
                flags += [b"k", b"k"]
        elif how == "token":
            flags.insert(rng.randrange(len(flags) + 1), rng.choice(META_BAD_TOKENS))
        elif how == "opaque":
            flags.insert(rng.randrange(len(flags) + 1),
                         b"O" + b"9" * rng.randrange(32, 40))
        else:
            # (none of them with a TTL that could expire during a run, should the list
            # come out short and the command run)
            pad = [b"P", b"L", b"I", b"u", b"s", b"f", b"MS", b"F1", b"D1", b"J1", b"C1",
                   b"R0", b"N0", b"T0", b"v", b"c", b"k", b"t", b"O1", b"q"] + list(ignored)
            pad = [p for p in pad if p[:1] not in {f[:1] for f in flags if isinstance(f, bytes)}]
            rng.shuffle(pad)
            while len(flags) < 19 and pad:
                flags.append(pad.pop())
        return flags, how

    @staticmethod
    def meta_parts(head, flags, tail=b"\r\n"):
        """Request parts: head, then each flag after a space; a flag is bytes or (prefix,
        CasRef)."""
        parts = [head]
        for f in flags:
            if isinstance(f, tuple):
                parts += [b" " + f[0], f[1]]
            else:
                parts.append(b" " + f)
        parts.append(tail)
        return parts

    def cas_capture(self, raw):
        """A request that shows the CAS of raw on this connection (mg c k, or gets)."""
        rng = self.rng
        if rng.random() < 0.3:
            return Op([b"gets %s\r\n" % raw], "gets", reads=[raw])
        flags = [b"c", b"k"] + ([b"v"] if rng.random() < 0.5 else [])
        rng.shuffle(flags)
        return Op(self.meta_parts(b"mg " + raw, flags), "mg-cas", reads=[raw])

    def op_mg(self):
        rng = self.rng
        mk = self.meta_key()
        flags = [f for f, p in ((b"v", 0.6), (b"f", 0.3), (b"t", 0.3), (b"s", 0.25),
                                (b"c", 0.3), (b"k", 0.35), (b"q", 0.12), (b"u", 0.1))
                 if rng.random() < p]
        if rng.random() < 0.2:
            flags.append(self.opaque())
        if rng.random() < 0.12:
            flags.append(b"T" + rng.choice(META_TTL))
        if rng.random() < 0.1:
            flags.append(b"N" + rng.choice(META_TTL))
        if rng.random() < 0.1:
            flags.append(b"R" + rng.choice(META_RECACHE))
        if rng.random() < 0.04:  # parsed and ignored by mg
            flags.append(rng.choice([b"P", b"L", b"I", b"C5", b"F5", b"D5", b"J5", b"MS"]))
        if mk.b:
            flags.append(b"b")
        rng.shuffle(flags)
        what = "mg"
        if rng.random() < 0.1:
            flags, how = self.meta_break(flags)
            what = "mg-" + how
        if rng.random() < 0.015:
            return Op([rng.choice([b"mg\r\n", b"mg \r\n"])], "mg-nokey")
        return Op(self.meta_parts(b"mg " + mk.token, flags), what,
                  reads=[mk.raw] if mk.raw is not None else [])

    def _ms_flags(self, mk):
        rng = self.rng
        flags = []
        client_flags = b"0"
        if rng.random() < 0.45:
            flags.append(rng.choice([b"MS", b"ME", b"ME", b"MR", b"MA", b"MA", b"MP"]))
        if rng.random() < 0.3:
            client_flags = rng.choice(FLAGS_VALID)
            flags.append(b"F" + client_flags)
        if rng.random() < 0.4:
            flags.append(b"T" + rng.choice(META_TTL))
        cas = None
        if rng.random() < 0.25:
            cas = self.meta_cas(mk.raw)
            flags.append((b"C", cas) if isinstance(cas, CasRef) else b"C" + cas)
            if rng.random() < 0.35:
                flags.append(b"I")
        for f, p in ((b"q", 0.15), (b"k", 0.3), (b"c", 0.3)):
            if rng.random() < p:
                flags.append(f)
        if rng.random() < 0.2:
            flags.append(self.opaque())
        if rng.random() < 0.04:  # parsed and ignored by ms
            flags.append(rng.choice([b"v", b"s", b"t", b"f", b"u", b"P", b"L", b"h", b"l"]))
        if mk.b:
            flags.append(b"b")
        rng.shuffle(flags)
        return flags, client_flags, cas

    def op_ms(self):
        rng = self.rng
        mk = self.meta_key()
        flags, client_flags, cas = self._ms_flags(mk)
        if mk.raw is None or any(f[:1] == b"O" and len(f) > 32 for f in flags
                                 if isinstance(f, bytes)):
            return self._ms_junk(mk, flags, "ms-badkey" if mk.raw is None else "ms-opaque")
        if mk.raw in (b"n", b"ctr", b"a") and rng.random() < 0.25:
            value = rng.choice(NUMERIC_VALUES)
        else:
            value = self.value(mk.raw, self.narrowed(client_flags))
        length = b"%d" % len(value)
        if rng.random() < 0.03:
            length = b"%d" % (len(value) + (1 << 32))  # narrowed to 32 bits, like set's
        op = Op(self.meta_parts(b"ms %s %s" % (mk.token, length), flags) + [value, b"\r\n"],
                "ms")
        if isinstance(cas, CasRef) and rng.random() < 0.5:
            return [self.cas_capture(mk.raw), op]
        return op

    def _ms_junk(self, mk, flags, what, length=None):
        """An ms that fails. Its data block is lines of junk: swallowed as a block (errors
        found once the length is known) or run as commands (errors before), each an ERROR."""
        data = _junk_data(self.rng)
        if length is None:
            length = b"%d" % (len(data) - 2)
        return Op(self.meta_parts(b"ms %s %s" % (mk.token, length), flags) + [data], what)

    def op_ms_bad(self):
        rng = self.rng
        mk = self.meta_key()
        if mk.raw is None:
            raw = self.key()
            mk = MetaKey(raw, raw, False, None)
        how = rng.choice(["flags", "flags", "flags", "length", "nolength", "mode", "key",
                          "chunk", "large"])
        flags, client_flags, _ = self._ms_flags(mk)
        if how == "flags":
            flags, why = self.meta_break(flags, ignored=[b"h", b"l"])
            return self._ms_junk(mk, flags, "ms-" + why)
        if how == "length":
            return self._ms_junk(mk, flags, "ms-length", rng.choice(LENGTH_INVALID))
        if how == "nolength":
            return Op([b"ms %s\r\n" % mk.token], "ms-nolength")
        if how == "mode":
            flags = [f for f in flags if not (isinstance(f, bytes) and f[:1] == b"M")]
            flags.insert(rng.randrange(len(flags) + 1),
                         rng.choice([b"MX", b"Ms", b"Me", b"MI", b"M+", b"MD"]))
            return self._ms_junk(mk, flags, "ms-mode")
        if how == "key":
            if rng.random() < 0.5:
                mk = MetaKey(self.long_key(), None, False, "long")
            else:
                mk = MetaKey(rng.choice(META_BAD_B64), None, True, "b64")
                flags = [f for f in flags if f != b"b"] + [b"b"]
            return self._ms_junk(mk, flags, "ms-key")
        if how == "chunk":
            n = rng.randrange(0, 20)
            if rng.random() < 0.5:
                data = bytes(rng.choice(b"abcxyz") for _ in range(n + rng.randrange(1, 5)))
                data += b"\r\n"
            else:
                data = bytes(rng.choice(b"abcxyz") for _ in range(n)) + b"\nq\r\n"
            return Op(self.meta_parts(b"ms %s %d" % (mk.token, n), flags) + [data], "ms-chunk")
        # too large: the data block is swallowed (and the old value removed).
        limit = item_limit(mk.raw, self.narrowed(client_flags))
        size = rng.choice([limit + 1, limit + 2, limit + 5, limit + rng.randrange(1, 500),
                           2 * ITEM_SIZE_MAX, ITEM_SIZE_MAX])
        value = bytes([rng.randrange(0x61, 0x7B)]) * size
        return Op(self.meta_parts(b"ms %s %d" % (mk.token, size), flags) + [value, b"\r\n"],
                  "ms-large")

    def op_md(self):
        rng = self.rng
        mk = self.meta_key()
        flags = [f for f, p in ((b"q", 0.15), (b"k", 0.35)) if rng.random() < p]
        if rng.random() < 0.2:
            flags.append(self.opaque())
        if rng.random() < 0.2:
            cas = self.meta_cas(mk.raw)
            flags.append((b"C", cas) if isinstance(cas, CasRef) else b"C" + cas)
        stale = rng.random() < 0.35
        if stale:
            flags.append(b"I")
        if rng.random() < (0.5 if stale else 0.1):
            flags.append(b"T" + rng.choice(META_TTL))
        if rng.random() < 0.04:  # parsed and ignored by md
            flags.append(rng.choice([b"MX", b"F1", b"s", b"v", b"t", b"u", b"N0", b"h"]))
        if mk.b:
            flags.append(b"b")
        rng.shuffle(flags)
        what = "md"
        if rng.random() < 0.08:
            flags, how = self.meta_break(flags)
            what = "md-" + how
        if rng.random() < 0.015:
            return Op([b"md\r\n"], "md-nokey")
        return Op(self.meta_parts(b"md " + mk.token, flags), what)

    def op_ma(self):
        rng = self.rng
        mk = self.meta_key(counters=True)
        flags = []
        if rng.random() < 0.4:
            flags.append(rng.choice([b"MI", b"M+", b"MD", b"M-"]))
        if rng.random() < 0.5:
            flags.append(b"D" + rng.choice(DELTAS))
        vivify = rng.random() < 0.2
        if vivify:
            flags.append(b"N" + rng.choice(META_TTL))
        if rng.random() < (0.6 if vivify else 0.05):
            flags.append(b"J" + rng.choice(META_INITIAL))
        if rng.random() < 0.1:
            cas = self.meta_cas(mk.raw)
            flags.append((b"C", cas) if isinstance(cas, CasRef) else b"C" + cas)
        if rng.random() < 0.1:
            flags.append(b"T" + rng.choice(META_TTL))
        for f, p in ((b"q", 0.12), (b"v", 0.5), (b"t", 0.2), (b"c", 0.25), (b"k", 0.3)):
            if rng.random() < p:
                flags.append(f)
        if rng.random() < 0.15:
            flags.append(self.opaque())
        if rng.random() < 0.03:  # parsed and ignored by ma
            flags.append(rng.choice([b"F1", b"s", b"f", b"u", b"I", b"R5", b"h", b"l"]))
        if mk.b:
            flags.append(b"b")
        rng.shuffle(flags)
        what = "ma"
        r = rng.random()
        if r < 0.03:
            flags = [f for f in flags if not (isinstance(f, bytes) and f[:1] == b"M")]
            flags.append(rng.choice([b"MX", b"Md", b"MS", b"MDD"]))
            what = "ma-mode"
        elif r < 0.1:
            flags, how = self.meta_break(flags)
            what = "ma-" + how
        if rng.random() < 0.015:
            return Op([b"ma\r\n"], "ma-nokey")
        op = Op(self.meta_parts(b"ma " + mk.token, flags), what, arith=mk.raw)
        if mk.raw in (b"n", b"ctr") and rng.random() < 0.5:
            # Something to count on: a number (or almost one) stored by ms; rarely one of
            # 2^63 or more (see the docstring).
            value = rng.choice(META_NUMBERS if rng.random() < 0.9 else NUMERIC_VALUES)
            return [Op([b"ms %s %d%s\r\n" % (mk.raw, len(value), rng.choice([b"", b" T0", b" F5"])),
                        value, b"\r\n"], "ms-number"), op]
        return op

    def op_mn(self):
        return Op([b"mn\r\n" if self.rng.random() < 0.9 else b"mn x\r\n"], "mn")

    def op_me(self):
        """me on keys nothing stores (EN), and its format errors; never a hit."""
        rng = self.rng
        key = rng.choice(ME_KEYS)
        r = rng.random()
        if r < 0.5:
            line = b"me %s\r\n" % key
        elif r < 0.65:
            line = b"me %s b\r\n" % base64.b64encode(key)
        elif r < 0.72:
            line = b"me %s x y\r\n" % key
        elif r < 0.82:
            line = b"me %s\r\n" % self.long_key()
        elif r < 0.9:
            line = b"me %s b\r\n" % rng.choice(META_BAD_B64)
        else:
            line = rng.choice([b"me\r\n", b"me \r\n", b"ME %s\r\n" % key])
        return Op([line], "me")

    def op_meta_junk(self):
        return Op([self.rng.choice(META_JUNK)], "meta-junk")

    def sequence(self):
        rng = self.rng
        makers = [
            (self.op_storage, 30), (self.op_cas, 8), (self.op_storage_bad_line, 5),
            (self.op_bad_chunk, 4), (self.op_too_large, 3), (self.op_append_grow, 2),
            (self.op_get, 20), (self.op_gat, 6), (self.op_long_key_get, 1.5),
            (self.op_delete, 6), (self.op_counter, 4), (self.op_arith, 9), (self.op_touch, 5),
            (self.op_flush, 0.5),
            (self.op_misc, 5),
            (self.op_mg, 12), (self.op_ms, 10), (self.op_ms_bad, 3), (self.op_md, 4),
            (self.op_ma, 6), (self.op_mn, 1.5), (self.op_me, 1), (self.op_meta_junk, 0.5),
        ]
        total = sum(w for _, w in makers)
        ops = []
        for _ in range(rng.randrange(40, 160)):
            x = rng.random() * total
            for fn, w in makers:
                x -= w
                if x <= 0:
                    break
            made = fn()
            ops.extend(made if isinstance(made, list) else [made])
        if rng.random() < 0.05:
            ops.append(Op([b"quit\r\n"], "quit", quit=True))
        batch_len = 0
        for i, op in enumerate(ops):
            if i == 0 or op.sync or batch_len >= 25 or rng.random() < 0.25:
                op.brk = True
                op.split = rng.random() < 0.3
                batch_len = 0
            batch_len += 1
        fix_batches(ops)
        return ops


# ---------------------------------------------------------------------------------------------
# Replies

_VALUE_RE = re.compile(rb"VALUE ([^ ]+) (\d+) (\d+)(?: (\d+))?\r\n\Z", re.S)
_VERSION_RE = re.compile(rb"VERSION 1\.6\.18(?: petracache-[^ \r\n]+)?\r\n\Z")
# A meta reply with a data block (mg ... v, ma ... v): VA <length> <return flags>*
_VA_RE = re.compile(rb"VA (\d+)(?: [^\r\n]*)?\r\n\Z")
_META_STATUS = (b"HD", b"VA", b"EN", b"NS", b"EX", b"NF")
# Remaining TTLs (mg/ma t) tick with the clock: the two servers' may differ by this much.
TTL_SLACK = 3


def meta_flags(line):
    """The return flags of a meta status line (HD VA EN NS EX NF), or None for any other
    line. Flags are space-separated; a k<key> flag may be followed by a lone `b` (the key is
    base64)."""
    if not line.endswith(b"\r\n"):
        return None
    toks = line[:-2].split(b" ")
    if toks[0] not in _META_STATUS:
        return None
    return toks[2:] if toks[0] == b"VA" else toks[1:]


def meta_cas_capture(line):
    """(key, CAS) from a meta reply that has both a k<key> and a c<cas> flag, else None:
    without k the reply does not say whose CAS it is."""
    flags = meta_flags(line)
    if not flags:
        return None
    key = cas = None
    for i, f in enumerate(flags):
        if f[:1] == b"k" and key is None:
            key = f[1:]
            if flags[i + 1:i + 2] == [b"b"]:
                try:
                    key = base64.b64decode(key, validate=True)
                except ValueError:
                    return None
        elif f[:1] == b"c" and f[1:].isdigit():
            cas = f[1:]
    return (key, cas) if key is not None and cas is not None else None


class Lane:
    """One connection to one server, driven without blocking by Driver.run_batch."""

    def __init__(self, server, name):
        self.name = name
        self.sock = socket.create_connection(server.address, timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.need = None      # bytes of a VALUE / VA data block still expected
        self.header = None
        self.kind = None      # "VALUE" or "VA"
        self.tokens = []
        self.caps = {}        # key -> last CAS seen on this connection
        self.closed = False
        self.raw = b""        # every reply byte of the current batch

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def parse(self):
        pos = 0
        buf = self.buf
        while True:
            if self.need is not None:
                if len(buf) - pos < self.need:
                    break
                data = buf[pos:pos + self.need]
                pos += self.need
                self.tokens.append((self.kind, self.header, data))
                if self.kind == "VALUE":
                    m = _VALUE_RE.match(self.header)
                    if m.group(4) is not None:
                        self.caps[m.group(1)] = m.group(4)
                else:
                    self.capture_meta(self.header)
                self.need = None
                continue
            i = buf.find(b"\r\n", pos)
            if i < 0:
                break
            line = buf[pos:i + 2]
            pos = i + 2
            m = _VALUE_RE.match(line)
            if m:
                self.header, self.kind = line, "VALUE"
                self.need = int(m.group(3)) + 2
                continue
            m = _VA_RE.match(line)
            if m:
                self.header, self.kind = line, "VA"
                self.need = int(m.group(1)) + 2
                continue
            self.tokens.append(("LINE", line))
            self.capture_meta(line)
        self.buf = buf[pos:]

    def capture_meta(self, line):
        cap = meta_cas_capture(line)
        if cap:
            self.caps[cap[0]] = cap[1]

    def versions(self):
        return sum(1 for t in self.tokens if t[0] == "LINE" and t[1].startswith(b"VERSION "))


def normalize_meta(line, ttls=None):
    """A meta status line with its CAS values (c<n>, n != 0) and remaining TTLs (t<n>) taken
    out; the TTLs go to ttls. A t that is 2^31 or more is memcached's unsigned print of an
    item that a T in the same request expired (1 - its clock, which counts from its start):
    only that it is one is compared."""
    flags = meta_flags(line)
    if flags is None:
        return line
    toks = line[:-2].split(b" ")
    out = toks[:len(toks) - len(flags)]  # the status (and VA's length)
    for f in flags:
        if f[:1] == b"c" and f[1:].isdigit() and f[1:] != b"0":
            f = b"c{cas}"
        elif f[:1] == b"t" and f[1:].isdigit():
            n = int(f[1:])
            if n >= 1 << 31:
                f = b"t{expired}"
            else:
                f = b"t{ttl}"
                if ttls is not None:
                    ttls.append(n)
        out.append(f)
    return b" ".join(out) + b"\r\n"


def normalize(tokens, ttls=None):
    """What must be equal between the servers: CAS values, the VERSION text and STAT lines
    (all of them) are taken out, and the remaining TTLs of meta replies (they go to ttls,
    compared within TTL_SLACK)."""
    out = []
    for t in tokens:
        if t[0] == "VALUE":
            m = _VALUE_RE.match(t[1])
            cas = b" {cas}" if m.group(4) is not None else b""
            out.append(b"VALUE %s %s %s%s\r\n" % (m.group(1), m.group(2), m.group(3), cas) + t[2])
        elif t[0] == "VA":
            out.append(normalize_meta(t[1], ttls) + t[2])
        elif t[0] == "LINE":
            line = t[1]
            if line.startswith(b"STAT "):
                continue
            if _VERSION_RE.match(line):
                line = b"VERSION 1.6.18{any}\r\n"
            else:
                line = normalize_meta(line, ttls)
            out.append(line)
        else:
            out.append(b"{%s}" % t[0].lower().encode())
    return out


def same_replies(a_tokens, b_tokens):
    ta, tb = [], []
    if normalize(a_tokens, ta) != normalize(b_tokens, tb):
        return False
    return all(abs(x - y) <= TTL_SLACK for x, y in zip(ta, tb))


def _clip(b, n=300):
    r = repr(b)
    return r if len(r) <= n else r[:n] + "...(%d bytes)" % len(b)


class Divergence:
    def __init__(self, batch_index, op_range, a_tokens, b_tokens):
        self.batch_index = batch_index
        self.op_range = op_range
        self.a_tokens = a_tokens
        self.b_tokens = b_tokens

    def describe(self, names):
        ta, tb = [], []
        na, nb = normalize(self.a_tokens, ta), normalize(self.b_tokens, tb)
        if na == nb:
            # Only the remaining TTLs differ (by more than TTL_SLACK).
            lines = ["batch %d (commands %d..%d): remaining TTLs (t flags) differ" % (
                self.batch_index, self.op_range[0], self.op_range[1] - 1)]
            for name, ttls in ((names[0], ta), (names[1], tb)):
                lines.append("  %s: %s" % (name, " ".join("t%d" % n for n in ttls)))
            return "\n".join(lines)
        i = 0
        while i < min(len(na), len(nb)) and na[i] == nb[i]:
            i += 1
        lines = ["batch %d (commands %d..%d): replies differ at reply token %d" % (
            self.batch_index, self.op_range[0], self.op_range[1] - 1, i)]
        for name, toks in ((names[0], na), (names[1], nb)):
            lines.append("  %s: %s" % (name, " | ".join(_clip(t, 160) for t in toks[i:i + 4])
                                       or "(nothing)"))
        return "\n".join(lines)


class BatchResult:
    def __init__(self, tokens, stalled, closed):
        self.tokens = tokens
        self.stalled = stalled
        self.closed = closed


def _chunks(data, rng):
    """Random pieces of data (1-64 bytes for the first 40 pieces, then the rest)."""
    out = []
    pos = 0
    while pos < len(data) and len(out) < 40:
        n = rng.randrange(1, 65)
        out.append(data[pos:pos + n])
        pos += n
    if pos < len(data):
        out.append(data[pos:])
    return out


def run_batch(lanes, payloads, expect_versions, expect_close, split_rng=None):
    """Sends payloads[i] on lanes[i] (all lanes at once) followed by the `version` sentinel;
    returns a BatchResult per lane once each lane has its replies, closed, or stalled."""
    sentinel = b"version\r\n"
    queues = []
    for lane, payload in zip(lanes, payloads):
        data = payload + sentinel
        if split_rng is not None:
            pieces = _chunks(data, random.Random(split_rng))
        else:
            pieces = [data]
        queues.append(pieces)
        lane.tokens = []
        lane.raw = b""
    pause_until = [0.0] * len(lanes)
    done = [False] * len(lanes)
    stalled = [False] * len(lanes)
    deadline = time.monotonic() + SEGMENT_TIMEOUT
    last_rx = [time.monotonic()] * len(lanes)
    while not all(done):
        now = time.monotonic()
        if now > deadline:
            for i in range(len(lanes)):
                if not done[i]:
                    stalled[i] = done[i] = True
            break
        rlist = [l.sock for i, l in enumerate(lanes) if not done[i] and not l.closed]
        wlist = [l.sock for i, l in enumerate(lanes)
                 if queues[i] and not l.closed and pause_until[i] <= now]
        waits = [pause_until[i] - now for i in range(len(lanes)) if queues[i] and not done[i]]
        timeout = max(0.0, min([0.05] + waits))
        r, w, _ = select.select(rlist, wlist, [], timeout)
        now = time.monotonic()
        for i, lane in enumerate(lanes):
            if lane.sock in w and queues[i]:
                piece = queues[i][0]
                try:
                    n = lane.sock.send(piece)
                except BlockingIOError:
                    n = 0
                except OSError:
                    lane.closed = True
                    queues[i] = []
                    n = 0
                last_rx[i] = now  # the quiet period starts after the last byte sent
                if n == len(piece):
                    queues[i].pop(0)
                    if split_rng is not None:
                        pause_until[i] = now + 0.001
                elif n:
                    queues[i][0] = piece[n:]
            if lane.sock in r:
                try:
                    chunk = lane.sock.recv(1 << 20)
                except BlockingIOError:
                    chunk = None
                except OSError:
                    chunk = b""
                if chunk == b"":
                    lane.closed = True
                elif chunk:
                    lane.buf += chunk
                    lane.raw += chunk
                    last_rx[i] = now
                    lane.parse()
            if done[i]:
                continue
            if lane.closed:
                lane.parse()
                lane.tokens.append(("CLOSE",))
                done[i] = True
            elif not expect_close and lane.versions() >= expect_versions + 1:
                done[i] = True
            elif not queues[i] and now - last_rx[i] > QUIET_TIMEOUT:
                stalled[i] = done[i] = True
    results = []
    for i, lane in enumerate(lanes):
        toks = lane.tokens
        if not stalled[i] and not lane.closed and not expect_close:
            # Drop the sentinel's reply: the last VERSION line.
            for j in range(len(toks) - 1, -1, -1):
                if toks[j][0] == "LINE" and toks[j][1].startswith(b"VERSION "):
                    del toks[j]
                    break
        if stalled[i]:
            toks = toks + [("STALL",)]
        results.append(BatchResult(list(toks), stalled[i], lane.closed))
    return results


# ---------------------------------------------------------------------------------------------
# Driver


class Outcome:
    def __init__(self):
        self.divergence = None
        self.batches = 0
        self.commands = 0
        self.stalled = False
        self.closed = False
        self.transcript = []   # (ops of the batch, [BatchResult per lane], [payload per lane])


def batches_of(ops):
    out = []
    for op in ops:
        if not out or op.brk or op.sync or op.uses_cas():
            out.append([])
        out[-1].append(op)
    return out


def run_ops(servers, ops, seed=0, verbose=False, names=("memcached", "petracache")):
    """Runs one sequence on a fresh connection to each server (after a flush_all); returns
    an Outcome with the first divergence, if any."""
    outcome = Outcome()
    lanes = [Lane(s, n) for s, n in zip(servers, names)]
    try:
        # A clean slate without restarting: flush_all (immediate) hides every older item in
        # both servers.
        res = run_batch(lanes, [b"flush_all\r\n"] * 2, 0, False)
        for r in res:
            if normalize(r.tokens) != [b"OK\r\n"]:
                raise RuntimeError("flush_all before the sequence failed: %r" % r.tokens)
        index = 0
        for bi, batch in enumerate(batches_of(ops)):
            payloads = [b"".join(op.render(l.caps) for op in batch) for l in lanes]
            versions = sum(op.versions for op in batch)
            expect_close = any(op.quit for op in batch)
            split = (seed * 1000003 + bi) if batch[0].split else None
            res = run_batch(lanes, payloads, versions, expect_close, split)
            outcome.batches += 1
            outcome.commands += len(batch)
            outcome.transcript.append((batch, res, payloads))
            if verbose:
                print("--- batch %d (%d commands)%s" % (bi, len(batch), " split" if split else ""))
                for op in batch:
                    print("  > %s" % _clip(op.render(lanes[0].caps), 200))
                for lane, r in zip(lanes, res):
                    print("  < %s: %s" % (lane.name, " | ".join(
                        _clip(t, 120) for t in normalize(r.tokens))))
            if not same_replies(res[0].tokens, res[1].tokens):
                outcome.divergence = Divergence(bi, (index, index + len(batch)),
                                                res[0].tokens, res[1].tokens)
                return outcome
            index += len(batch)
            if any(r.stalled for r in res):
                outcome.stalled = True
                return outcome
            if any(r.closed for r in res):
                outcome.closed = True
                return outcome
        return outcome
    finally:
        for l in lanes:
            l.close()


def petracache_config(durability=None):
    config = {k: dict(v) for k, v in PETRACACHE_CONFIG.items()}
    if durability:
        config["storage"]["durability"] = durability
    return config


def start_pair(self_check=False, durability=None):
    """(memcached, petracache) — or two memcached with self_check — both with a 64 KiB item
    size limit. durability: petracache's [storage] durability (sync holds every reply for an
    fsync on the commit thread, another code path)."""
    servers = []
    try:
        servers.append(harness.start_server(kind="memcached", memcached_args=MEMCACHED_ARGS))
        if self_check:
            servers.append(harness.start_server(kind="memcached", memcached_args=MEMCACHED_ARGS))
        else:
            servers.append(harness.start_server(kind="petracache",
                                                extra_config=petracache_config(durability)))
    except BaseException:
        for s in servers:
            s.cleanup()
        raise
    return servers


def shrink(servers, ops, budget_s=60.0, max_trials=300, log=None):
    """ddmin over the commands: the smallest sub-sequence (by removing chunks) that still
    diverges, then each batch sent whole and one command per batch where that still fails."""
    t_end = time.monotonic() + budget_s
    trials = [0]

    def fails(cand):
        if time.monotonic() > t_end or trials[0] >= max_trials:
            return False
        trials[0] += 1
        cand = fix_batches([clone(op) for op in cand])
        return run_ops(servers, cand).divergence is not None

    cur = list(ops)
    n = 2
    while len(cur) >= 2 and time.monotonic() < t_end and trials[0] < max_trials:
        size = (len(cur) + n - 1) // n
        progressed = False
        for start in range(0, len(cur), size):
            cand = cur[:start] + cur[start + size:]
            if cand and fails(cand):
                cur = cand
                n = max(n - 1, 2)
                progressed = True
                break
        if not progressed:
            if n >= len(cur):
                break
            n = min(len(cur), n * 2)
    # Simplify the batching: whole sends, then one command per batch.
    whole = fix_batches([clone(op, split=False) for op in cur])
    if fails(whole):
        cur = whole
    single = [clone(op, brk=True, split=False) for op in cur]
    if fails(single):
        cur = single
    cur = fix_batches([clone(op) for op in cur])
    if log:
        log("shrunk to %d commands in %d trials" % (len(cur), trials[0]))
    return cur


def fix_batches(ops):
    """Marks the batch breaks every sequence needs (also after shrinking removed commands):
    a command using a captured CAS value starts a batch (the capture must have arrived), and
    so does an incr/decr on a key a retrieval earlier in the same batch returned: memcached
    updates the number in place (padding a shorter one with spaces) only if nothing else
    holds the item, and the unsent reply of that retrieval does."""
    read_in_batch = set()
    for i, op in enumerate(ops):
        if i == 0 or op.uses_cas() or op.arith in read_in_batch:
            op.brk = True
        if op.brk or op.sync:
            read_in_batch = set()
        read_in_batch.update(op.reads)
    return ops


def clone(op, brk=None, split=None):
    c = Op(list(op.parts), op.what, op.versions, op.sync, op.quit, op.reads, op.arith)
    c.brk = op.brk if brk is None else brk
    c.split = op.split if split is None else split
    return c


# ---------------------------------------------------------------------------------------------
# Candidate golden files


def _esc(data):
    from golden_replay import escape  # noqa: WPS433 (only needed here)
    out = []
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i]:
            j += 1
        b = data[i]
        if j - i >= 16 and 0x21 <= b < 0x7F and b not in (0x5C, 0x7B, 0x7D):
            out.append("{rep:%d:%s}" % (j - i, chr(b)))
            i = j
        else:
            out.append(escape(data[i:i + 1]))
            i += 1
    s = "".join(out)
    if s.endswith(" "):
        s = s[:-1] + "\\x20"
    return s


def _golden_meta(line, names, counter):
    """A meta status line as golden text: a CAS is {cas:name} when the line names its key
    (k, as the lanes capture it), else {num}; a remaining TTL is {num}."""
    flags = meta_flags(line)
    toks = line[:-2].split(b" ")
    out = [_esc(t) for t in toks[:len(toks) - len(flags)]]
    cap = meta_cas_capture(line)
    if cap and cap[1] == b"0":
        names.pop(cap[0], None)  # the lanes captured 0, which a request shows as 0
    for f in flags:
        if f[:1] == b"c" and f[1:].isdigit() and f[1:] != b"0":
            if cap:
                counter[0] += 1
                name = "c%d" % counter[0]
                names[cap[0]] = name
                out.append("c{cas:%s}" % name)
            else:
                out.append("c{num}")
        elif f[:1] == b"t" and f[1:].isdigit():
            out.append("t{num}")
        else:
            out.append(_esc(f))
    return " ".join(out) + "\\r\\n"


def golden_text(outcome, seed, note, durability=None):
    """A golden transcript of the sequence, expecting memcached's replies (lane 0)."""
    lines = ["# Differential testing, seed %d: petracache's replies differed from memcached "
             "1.6.18's." % seed,
             "# Found by tests/integration/differential.py with a 64 KiB item size limit on "
             "both servers%s;" % (" and petracache durability = %s" % durability
                                  if durability else ""),
             "# the golden replayer uses the defaults, so check the reproducer still fails "
             "there.",
             "# %s" % note, ""]
    names = {}   # key -> latest capture name
    counter = [0]
    for bi, (batch, res, _payloads) in enumerate(outcome.transcript):
        if bi:
            lines.append("@sync")
        for op in batch:
            text = []
            for p in op.parts:
                if isinstance(p, CasRef):
                    text.append("{%s}" % names[p.key] if p.key in names else "0")
                else:
                    text.append(_esc(p))
            lines.append("> " + "".join(text))
        for t in res[0].tokens:
            if t[0] == "VALUE":
                m = _VALUE_RE.match(t[1])
                head = "VALUE %s %s %s" % (_esc(m.group(1)), m.group(2).decode(),
                                           m.group(3).decode())
                if m.group(4) is not None:
                    counter[0] += 1
                    name = "c%d" % counter[0]
                    names[m.group(1)] = name
                    head += " {cas:%s}" % name
                lines.append("< " + head + "\\r\\n" + _esc(t[2]))
            elif t[0] == "VA":
                lines.append("< " + _golden_meta(t[1], names, counter) + _esc(t[2]))
            elif t[0] == "LINE":
                if t[1].startswith(b"STAT "):
                    if not lines[-1].endswith("{stats}"):
                        lines.append("< {stats}")
                    continue
                if _VERSION_RE.match(t[1]):
                    lines.append("< VERSION 1.6.18{any}\\r\\n")
                elif meta_flags(t[1]) is not None:
                    lines.append("< " + _golden_meta(t[1], names, counter))
                else:
                    lines.append("< " + _esc(t[1]))
            elif t[0] == "CLOSE":
                lines.append("< {close}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Runs


class Stats:
    def __init__(self):
        self.seeds = 0
        self.commands = 0
        self.batches = 0
        self.stalled = 0
        self.closed = 0
        self.divergent = []   # (seed, report): diverged again on fresh servers
        self.unconfirmed = []  # (seed, report): only after earlier seeds on the same servers


def _on_fresh(restart, servers, ops, seed):
    """Runs ops on fresh servers from restart() (or on `servers` without it)."""
    fresh = restart() if restart else servers
    try:
        return run_ops(fresh, [clone(op) for op in ops], seed)
    finally:
        if restart:
            for s in fresh:
                s.cleanup()


def check_seed(servers, seed, names, out_dir=None, do_shrink=True, log=print,
               shrink_budget=60.0, restart=None, durability=None):
    """Runs one seed. On a divergence: runs the sequence again on fresh servers (restart()
    gives new ones). If it diverges there too it is *confirmed*: shrunk, and the smallest
    sequence that still diverges on fresh servers is the reproducer. If not, it is
    *unconfirmed*: it depends on state earlier seeds left behind (data on disk and cold
    caches in petracache, memory contents in memcached) and the full sequence is reported.
    Prints the report and writes a candidate golden. Returns (Outcome, report or None,
    "confirmed" / "unconfirmed" / None)."""
    ops = Generator(seed).sequence()
    outcome = run_ops(servers, ops, seed)
    if outcome.divergence is None:
        return outcome, None, None
    first = outcome.divergence.describe(names)
    again = _on_fresh(restart, servers, ops, seed)
    if again.divergence is None:
        kind = "unconfirmed"
        small, small_outcome = ops, outcome
        note = ("Did NOT diverge again on fresh servers: it depends on state left by earlier "
                "seeds.\n# Divergence: " + first.replace("\n", "\n# "))
    else:
        kind = "confirmed"
        small, small_outcome = ops, again
        if do_shrink:
            cand = shrink(servers, ops, budget_s=shrink_budget, log=log)
            cand_outcome = _on_fresh(restart, servers, cand, seed)
            if cand_outcome.divergence is not None:
                small, small_outcome = cand, cand_outcome
        note = "Divergence: " + small_outcome.divergence.describe(names).replace("\n", "\n# ")
    report = ["seed %d diverges (%s): %s" % (seed, kind, first)]
    if kind == "unconfirmed":
        report.append("not reproduced on fresh servers (state left by earlier seeds); the "
                      "whole sequence (%d commands):" % len(small))
    else:
        report.append("minimal reproducer on fresh servers (%d commands), each batch sent "
                      "after the previous one's replies:" % len(small))
    for bi, (batch, res, payloads) in enumerate(small_outcome.transcript):
        report.append("  batch %d:" % bi)
        for op in batch:
            report.append("    > %s" % _clip(op.display(), 300))
    report.append(small_outcome.divergence.describe(names))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "diff_seed%d%s.golden" % (
            seed, "_unconfirmed" if kind == "unconfirmed" else ""))
        with open(path, "w") as f:
            f.write(golden_text(small_outcome, seed, note, durability))
        report.append("candidate golden: %s" % path)
    text = "\n".join(report)
    log(text)
    return outcome, text, kind


def run_seeds(seeds, self_check=False, out_dir=None, do_shrink=True, time_budget=None,
              log=print, stop_after=None, durability=None, shrink_budget=60.0):
    names = ("memcached", "memcached#2") if self_check else ("memcached", "petracache")
    stats = Stats()
    servers = start_pair(self_check, durability)
    t_end = time.monotonic() + time_budget if time_budget else None
    try:
        for seed in seeds:
            if t_end and time.monotonic() > t_end:
                break
            outcome, report, kind = check_seed(servers, seed, names, out_dir, do_shrink, log,
                                         shrink_budget=shrink_budget, durability=durability,
                                         restart=lambda: start_pair(self_check, durability))
            stats.seeds += 1
            stats.commands += outcome.commands
            stats.batches += outcome.batches
            stats.stalled += outcome.stalled
            stats.closed += outcome.closed
            if report:
                (stats.divergent if kind == "confirmed" else stats.unconfirmed).append(
                    (seed, report))
                if stop_after and len(stats.divergent) + len(stats.unconfirmed) >= stop_after:
                    break
            for s, n in zip(servers, names):
                if not s.alive():
                    raise harness.ServerError("%s died during seed %d\n%s" % (
                        n, seed, s.output_tail()))
    finally:
        for s in servers:
            s.cleanup()
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    ap.add_argument("--start", type=int, default=1, help="first seed (default 1)")
    ap.add_argument("--seed", type=int, action="append", help="run just this seed (repeatable)")
    ap.add_argument("--out", default="/tmp/petracache-diff",
                    help="where candidate goldens go (default /tmp/petracache-diff)")
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--self-check", action="store_true",
                    help="memcached against a second memcached (checks the generator)")
    ap.add_argument("--verbose", action="store_true", help="print every batch (with --seed)")
    ap.add_argument("--durability", choices=("none", "wal", "sync"),
                    help="petracache's [storage] durability (default: its default, wal)")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop after this many divergent seeds (0 = never)")
    args = ap.parse_args(argv)
    # SIGTERM ends the run through the normal cleanup (servers stopped, temp dirs removed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.access(harness.MEMCACHED_BIN, os.X_OK):
        print("memcached not found at %s" % harness.MEMCACHED_BIN, file=sys.stderr)
        return 2
    if not args.self_check:
        harness.set_server_kind("petracache")
        reason = harness.target_unavailable_reason()
        if reason:
            print(reason, file=sys.stderr)
            return 2
    seeds = args.seed or range(args.start, args.start + args.seeds)
    started = time.monotonic()
    if args.verbose and args.seed:
        servers = start_pair(args.self_check, args.durability)
        try:
            for seed in args.seed:
                o = run_ops(servers, Generator(seed).sequence(), seed, verbose=True)
                print("seed %d: %s" % (seed, o.divergence.describe(("memcached", "other"))
                                       if o.divergence else "same replies"))
        finally:
            for s in servers:
                s.cleanup()
        return 0
    stats = run_seeds(seeds, args.self_check, args.out, not args.no_shrink,
                      stop_after=args.stop_after or None, durability=args.durability)
    print("differential: %d seeds, %d commands in %d batches, %d stalled, %d closed, "
          "%d divergent, %d unconfirmed, %.1fs" % (
              stats.seeds, stats.commands, stats.batches, stats.stalled, stats.closed,
              len(stats.divergent), len(stats.unconfirmed), time.monotonic() - started))
    if stats.divergent:
        print("divergent seeds: %s" % " ".join(str(s) for s, _ in stats.divergent))
    if stats.unconfirmed:
        print("unconfirmed seeds (diverged only after earlier seeds; triage by hand): %s" %
              " ".join(str(s) for s, _ in stats.unconfirmed))
    return 1 if stats.divergent else 2 if stats.unconfirmed else 0


if __name__ == "__main__":
    sys.exit(main())
