#!/usr/bin/env bash
# test.sh: build the packages, lint them, install the .deb on this machine, run the installed
# server as the service would, upgrade, remove and purge it, and check the .rpm's metadata.
#
#   packaging/test.sh [--no-build]     (root; --no-build tests what is already in dist/)
#
# It installs the petracache package for real (dpkg -i) and purges it at the end, so run it on
# a throwaway or CI machine. It refuses to start if petracache is already installed, unless
# PETRACACHE_PKG_TEST_REPLACE=1 (which purges it, data included). There is no systemd in the
# containers this runs in, so the unit is checked with systemd-analyze and the server is started
# directly, under the unit's user, on free loopback ports. Only processes it started are
# stopped, by PID. Ends with "N passed, N failed"; exit status 1 on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST="$ROOT/dist"
PY=/usr/bin/python3
build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
# check DESCRIPTION CMD...: pass if CMD succeeds; on failure show its output. CMD runs in a
# subshell, so it must not change this shell's state. Returns CMD's success.
check() {
  local desc=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$desc"
    return 0
  fi
  fail "$desc"
  if [[ -n "$out" ]]; then printf '%s\n' "$out" | sed 's/^/     /' | tail -n 40; fi
  return 1
}
finish() {
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit $?
}
log() { printf '==> %s\n' "$*"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/petracache-pkgtest.XXXXXX")
chmod 0755 "$TMP"
server_pid=""
installed_by_us=0
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  if ((installed_by_us)) && dpkg-query -W -f='${Status}' petracache 2>/dev/null | grep -qv 'not-installed'; then
    dpkg -P petracache >/dev/null 2>&1
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# ---------------------------------------------------------------- prerequisites
if [[ $(id -u) -ne 0 ]]; then
  fail "must run as root (dpkg -i)"
  finish
fi
missing=()
for tool in dpkg-deb lintian rpm rpm2archive setpriv systemd-analyze groff "$PY"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  fail "missing tools: ${missing[*]} (apt-get install lintian rpm groff-base systemd util-linux)"
  finish
fi
if dpkg-query -W -f='${Status}' petracache 2>/dev/null | grep -q 'install ok\|config-files'; then
  if [[ "${PETRACACHE_PKG_TEST_REPLACE:-0}" == 1 ]]; then
    log "purging the installed petracache package (PETRACACHE_PKG_TEST_REPLACE=1)"
    dpkg -P petracache >/dev/null
  else
    fail "petracache is already installed here; this test installs and purges it (data included). Purge it first or set PETRACACHE_PKG_TEST_REPLACE=1"
    finish
  fi
fi
if [[ -e /var/lib/petracache ]]; then
  fail "/var/lib/petracache exists without the package; move it away first"
  finish
fi

version=$(sed -n "s/^[[:space:]]*version:[[:space:]]*'\([^']*\)'.*/\1/p" "$ROOT/meson.build" | head -n 1)

# ---------------------------------------------------------------- build
if ((build)); then
  log "building packages (packaging/build.sh)"
  if "$ROOT/packaging/build.sh" >"$TMP/build.out" 2>&1; then
    pass "packaging/build.sh"
  else
    fail "packaging/build.sh"
    sed 's/^/     /' "$TMP/build.out" | tail -n 60
    finish
  fi
fi
shopt -s nullglob
debs=("$DIST"/petracache_"$version"-*_*.deb)
rpms=("$DIST"/petracache-"$version"-*.rpm)
changes=("$DIST"/petracache_"$version"-*_*.changes)
shopt -u nullglob
if ((${#debs[@]} != 1 || ${#rpms[@]} != 1)); then
  fail "expected one .deb and one .rpm for $version in dist/ (found: ${debs[*]:-none} ${rpms[*]:-none})"
  finish
fi
deb=${debs[0]}
rpm_file=${rpms[0]}
# Compare the packages with the exact source they were built from (build.sh leaves it in dist/
# as the rpm's Source0), not with a work tree that may have changed since.
SRCROOT=$ROOT
if [[ -f "$DIST/petracache-$version.tar.gz" ]]; then
  mkdir -p "$TMP/src"
  tar -xzf "$DIST/petracache-$version.tar.gz" -C "$TMP/src"
  SRCROOT="$TMP/src/petracache-$version"
fi
log "testing $(basename "$deb") and $(basename "$rpm_file")"
deb_version=$(dpkg-deb -f "$deb" Version)
check "deb version $deb_version follows meson.build ($version)" test "${deb_version%-*}" = "$version"

# ---------------------------------------------------------------- lintian
log "lintian"
lint_target=$deb
((${#changes[@]} == 1)) && lint_target=${changes[0]}
lintian --fail-on error --display-level '>=warning' --show-overrides "$lint_target" >"$TMP/lintian.out" 2>&1
lint_rc=$?
grep -v '^running with root privileges' "$TMP/lintian.out" | sed 's/^/     /'
if ((lint_rc == 0)); then
  pass "lintian: no errors ($(grep -c '^W:' "$TMP/lintian.out") warnings, $(grep -c '^O:' "$TMP/lintian.out") overridden)"
else
  fail "lintian reported errors"
fi

# ---------------------------------------------------------------- package contents
log "package contents"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' | grep -v '^$' >"$TMP/deb.files"
for f in /usr/bin/petracache /etc/petracache/petracache.ini /lib/systemd/system/petracache.service \
  /usr/share/man/man8/petracache.8.gz /usr/share/doc/petracache/copyright; do
  check "deb ships $f" grep -qx "$f" "$TMP/deb.files"
done
check "deb ships docs/operations.md" grep -q '^/usr/share/doc/petracache/operations.md' "$TMP/deb.files"
check "deb does not ship /var/lib/petracache (postinst creates it, purge removes it)" \
  bash -c "! grep -q '^/var/lib/petracache' '$TMP/deb.files'"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles >"$TMP/conffiles" 2>/dev/null
check "/etc/petracache/petracache.ini is a conffile" grep -qx /etc/petracache/petracache.ini "$TMP/conffiles"
check "Depends has adduser and the shared libraries" \
  bash -c "dpkg-deb -f '$deb' Depends | grep -q 'adduser' && dpkg-deb -f '$deb' Depends | grep -q 'librocksdb'"

mkdir -p "$TMP/deb-root"
dpkg-deb -x "$deb" "$TMP/deb-root"
# The packaged config must equal the sample except for the header, db_path, backup_dir and user.
cat >"$TMP/config_diff.py" <<'EOF'
import sys
sample = open(sys.argv[1]).read().splitlines()
packaged = open(sys.argv[2]).read().splitlines()
# The packaging header: comment lines before the sample's first line.
start = packaged.index(sample[0]) if sample[0] in packaged else -1
if start <= 0 or not all(line.startswith(";") for line in packaged[:start]):
    sys.exit("no packaging header of comment lines before the sample's first line")
packaged = packaged[start:]
if len(sample) != len(packaged):
    sys.exit(f"line count differs: sample {len(sample)}, packaged {len(packaged)}")
diffs = [(a, b) for a, b in zip(sample, packaged) if a != b]
expected = {("db_path = ./data/rocksdb", "db_path = /var/lib/petracache/db"),
            ("backup_dir =", "backup_dir = /var/lib/petracache/backups"), ("user =", "user = petracache")}
if set(diffs) != expected or len(diffs) != len(expected):
    sys.exit(f"unexpected differences: {diffs}")
EOF
check "packaged petracache.ini = sample + header, db_path, backup_dir, user" \
  "$PY" "$TMP/config_diff.py" "$SRCROOT/petracache.ini" "$TMP/deb-root/etc/petracache/petracache.ini"
check "packaged unit is packaging/petracache.service" \
  cmp "$SRCROOT/packaging/petracache.service" "$TMP/deb-root/lib/systemd/system/petracache.service"
gzip -dc "$TMP/deb-root/usr/share/man/man8/petracache.8.gz" >"$TMP/petracache.8"
check "man page renders without groff warnings" \
  bash -c "LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 '$TMP/petracache.8' 2>&1 | { ! grep .; }"
check "man page carries version $version" grep -q "^\.TH PETRACACHE 8 .*petracache $version" "$TMP/petracache.8"
# Every configuration key is described in the man page (keeps the summary from drifting).
missing_keys=$(sed -n 's/^\([a-z_]*\) = .*/\1/p' "$SRCROOT/petracache.ini" | sort -u | while read -r key; do
  grep -qx "\.B $key" "$TMP/petracache.8" || echo "$key"
done)
check "man page describes every key of petracache.ini" test -z "$missing_keys"
[[ -n "$missing_keys" ]] && echo "     missing: $missing_keys"

# ---------------------------------------------------------------- install
log "dpkg -i"
installed_by_us=1
if dpkg -i "$deb" >"$TMP/dpkg-i.out" 2>&1; then
  pass "dpkg -i $(basename "$deb")"
else
  fail "dpkg -i"
  sed 's/^/     /' "$TMP/dpkg-i.out"
  finish
fi
check "petracache --version" bash -c "/usr/bin/petracache --version | grep -qx 'petracache $version (memcached protocol .*)'"
check "system user petracache exists with a nologin shell" \
  bash -c "getent passwd petracache | grep -q ':/var/lib/petracache:/usr/sbin/nologin$'"
check "/var/lib/petracache is petracache:petracache 750" \
  test "$(stat -c '%U:%G %a' /var/lib/petracache 2>&1)" = "petracache:petracache 750"
check "unit enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/petracache.service
check "systemd-analyze verify petracache.service" \
  bash -c "systemd-analyze verify /lib/systemd/system/petracache.service 2>&1 | { ! grep .; }"
systemd-analyze security --offline=true /lib/systemd/system/petracache.service >"$TMP/security.out" 2>&1
exposure=$(sed -n 's/.*Overall exposure level for petracache.service: \([0-9.]*\).*/\1/p' "$TMP/security.out")
check "systemd-analyze security: exposure ${exposure:-?} <= 2.0" \
  "$PY" -c "import sys; sys.exit(0 if float('${exposure:-99}') <= 2.0 else 1)"

# ---------------------------------------------------------------- run the installed server
# As the unit runs it: user petracache, the packaged config, the packaged data directory. Only
# the ports (free loopback ports) and the cache size come from environment overrides.
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
while [[ "$MPORT" == "$PORT" ]]; do MPORT=$(free_port); done
start_server() {  # start_server LOGFILE [extra command prefix...]
  local logfile=$1
  shift
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    PETRACACHE_LISTEN_ADDR="127.0.0.1:$PORT" PETRACACHE_METRICS_ADDR="127.0.0.1:$MPORT" \
    PETRACACHE_STORAGE_BLOCK_CACHE_SIZE=64MiB PETRACACHE_SERVER_THREADS=2 \
    "$@" setpriv --reuid=petracache --regid=petracache --init-groups --inh-caps=-all \
    /usr/bin/petracache --config /etc/petracache/petracache.ini >"$logfile" 2>&1 &
  server_pid=$!
}
# wait_ready: poll /ready (bounded), fail early if the server died.
wait_ready() {
  "$PY" - "$MPORT" "$server_pid" <<'EOF'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("server exited")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("not ready within 30 s")
EOF
}
# stop_server [PID]: SIGTERM to PID (default: the server we started), wait for our child
# (bounded, then SIGKILL), succeed on exit status 0. Sets stop_rc. Runs in this shell (wait).
stop_rc=""
stop_server() {
  local target=${1:-$server_pid} deadline=$((SECONDS + 60))
  kill -TERM "$target" 2>/dev/null
  while kill -0 "$server_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$target" "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=""
    stop_rc="timeout"
    return 1
  fi
  wait "$server_pid"
  stop_rc=$?
  server_pid=""
  return "$stop_rc"
}
cat >"$TMP/client.py" <<'EOF'
# client.py PORT MPORT MODE VERSION: talk memcached and HTTP to the server.
import socket, sys, time, urllib.request
port, mport, mode, version = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
buf = b""
def request(data, terminator):
    global buf
    sock.sendall(data)
    deadline = time.monotonic() + 10
    while terminator not in buf:
        if time.monotonic() > deadline:
            sys.exit(f"timeout waiting for {terminator!r} after {data!r}, got {buf!r}")
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"connection closed after {data!r}, got {buf!r}")
        buf += chunk
    reply, _, buf = buf.partition(terminator)
    return reply + terminator
def expect(data, want, terminator=b"\r\n"):
    got = request(data, terminator)
    if got != want:
        sys.exit(f"{data!r}: expected {want!r}, got {got!r}")
expect(b"version\r\n", f"VERSION 1.6.18 petracache-{version}\r\n".encode())
if mode == "write":
    expect(b"set pkgtest 42 0 5\r\nhello\r\n", b"STORED\r\n")
    expect(b"get pkgtest\r\n", b"VALUE pkgtest 42 5\r\nhello\r\nEND\r\n", b"END\r\n")
    for path, want in (("/health", b"ok\n"), ("/ready", b"ready\n")):
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}{path}", timeout=5) as r:
            body = r.read()
            if r.status != 200 or body != want:
                sys.exit(f"{path}: {r.status} {body!r}")
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
        if r.status != 200 or b"# TYPE" not in r.read():
            sys.exit("/metrics: no Prometheus text")
else:  # the item written by the previous run is still there
    expect(b"get pkgtest\r\n", b"VALUE pkgtest 42 5\r\nhello\r\nEND\r\n", b"END\r\n")
sock.close()
EOF

log "starting the installed server as user petracache (127.0.0.1:$PORT, metrics :$MPORT)"
start_server "$TMP/server1.log"
if check "server ready (GET /ready)" wait_ready; then
  check "memcached version/set/get, /health /ready /metrics" \
    "$PY" "$TMP/client.py" "$PORT" "$MPORT" write "$version"
  check "server runs as user petracache" test "$(ps -o user= -p "$server_pid" | tr -d ' ')" = petracache
  if stop_server; then pass "SIGTERM: graceful shutdown, exit 0"; else fail "SIGTERM: exit status $stop_rc (expected 0)"; fi
else
  stop_server
fi
sed 's/^/     | /' "$TMP/server1.log" | head -n 20
check "log lines carry journald priorities (<N>)" grep -q '^<[0-7]>' "$TMP/server1.log"
check "data files in /var/lib/petracache are owned by petracache" \
  bash -c "test -f /var/lib/petracache/db/CURRENT && test -z \"\$(find /var/lib/petracache ! -user petracache)\""

log "restart: the item persists"
start_server "$TMP/server2.log"
if check "server ready again" wait_ready; then
  check "item written before the restart is served" "$PY" "$TMP/client.py" "$PORT" "$MPORT" read "$version"
  if stop_server; then pass "SIGTERM again: exit 0"; else fail "SIGTERM again: exit status $stop_rc"; fi
else
  stop_server
  sed 's/^/     | /' "$TMP/server2.log" | tail -n 20
fi

# The unit's SystemCallFilter (@system-service minus @privileged, EPERM) must allow every system
# call the server makes: run it under strace and compare. Skipped without strace.
if command -v strace >/dev/null; then
  log "system calls vs the unit's SystemCallFilter (strace)"
  start_server "$TMP/server3.log" strace -f -qq -o "$TMP/strace.out"
  if wait_ready; then
    "$PY" "$TMP/client.py" "$PORT" "$MPORT" read "$version" >/dev/null 2>&1
    "$PY" -c "import urllib.request as u; [u.urlopen('http://127.0.0.1:$MPORT'+p, timeout=5).read() for p in ('/health','/metrics')]" >/dev/null 2>&1
    # Signal the server, not strace: strace's child (setpriv) exec'd into petracache.
    stop_server "$(ps -o pid= --ppid "$server_pid" | tr -d ' ' | head -n 1)"
    # The server's calls: everything after setpriv's successful execve of the binary.
    "$PY" - "$TMP/strace.out" >"$TMP/syscalls.used" <<'EOF'
import re, sys
seen, started = set(), False
for line in open(sys.argv[1]):
    if not started:
        started = 'execve("/usr/bin/petracache"' in line and line.rstrip().endswith("= 0")
        continue
    m = re.match(r"\d+\s+([a-z_0-9]+)\(", line)
    if m:
        seen.add(m.group(1))
print("\n".join(sorted(seen)))
EOF
    # The unit's filter: @system-service minus @privileged, groups expanded recursively.
    "$PY" - >"$TMP/allowed.final" <<'EOF'
import subprocess
def expand(group, seen=None):
    seen = set() if seen is None else seen
    out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                         capture_output=True, text=True, check=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                calls |= expand(name, seen)
        else:
            calls.add(name)
    return calls
print("\n".join(sorted(expand("@system-service") - expand("@privileged"))))
EOF
    # Calls made before the server's own code runs (setpriv, strace) are not the server's.
    refused=$(LC_ALL=C comm -23 "$TMP/syscalls.used" "$TMP/allowed.final")
    check "all $(wc -l <"$TMP/syscalls.used") system calls used are allowed by SystemCallFilter" test -z "$refused"
    [[ -n "$refused" ]] && echo "     refused: $refused"
  else
    fail "server under strace did not become ready"
    stop_server "$(ps -o pid= --ppid "$server_pid" | tr -d ' ' | head -n 1)"
    sed 's/^/     | /' "$TMP/server3.log" | tail -n 20
  fi
else
  log "strace not installed: SystemCallFilter check skipped"
fi

# ---------------------------------------------------------------- upgrade
# A real upgrade path: the same package re-versioned to ${deb_version}+upgradetest1. An edited
# conffile and the data directory must both survive.
log "upgrade to ${deb_version}+upgradetest1"
echo "; edited by packaging/test.sh" >>/etc/petracache/petracache.ini
mkdir -p "$TMP/repack"
dpkg-deb -R "$deb" "$TMP/repack/pkg"
sed -i "s/^Version: .*/Version: ${deb_version}+upgradetest1/" "$TMP/repack/pkg/DEBIAN/control"
dpkg-deb -b "$TMP/repack/pkg" "$TMP/repack/upgrade.deb" >/dev/null
if dpkg -i "$TMP/repack/upgrade.deb" >"$TMP/dpkg-up.out" 2>&1 </dev/null; then
  pass "dpkg -i (upgrade)"
else
  fail "dpkg -i (upgrade)"
  sed 's/^/     /' "$TMP/dpkg-up.out"
fi
check "upgrade kept the edited conffile" grep -qx '; edited by packaging/test.sh' /etc/petracache/petracache.ini
check "upgrade left no .dpkg-new/.dpkg-dist" bash -c "! ls /etc/petracache/*.dpkg-* 2>/dev/null | grep ."
check "upgrade kept the data" test -f /var/lib/petracache/db/CURRENT

# ---------------------------------------------------------------- remove, purge
log "dpkg -r"
check "dpkg -r petracache" dpkg -r petracache
check "binary removed" test ! -e /usr/bin/petracache
check "remove kept the data directory and its data" test -f /var/lib/petracache/db/CURRENT
check "remove kept the conffile" test -f /etc/petracache/petracache.ini
log "dpkg -P"
check "dpkg -P petracache" dpkg -P petracache
check "purge removed /var/lib/petracache" test ! -e /var/lib/petracache
check "purge removed /etc/petracache" test ! -e /etc/petracache
check "purge removed the unit's enablement symlink" test ! -e /etc/systemd/system/multi-user.target.wants/petracache.service
check "package gone from dpkg's database" bash -c "! dpkg-query -W -f='\${Status}' petracache 2>/dev/null | grep -q 'install\|config-files'"
installed_by_us=0

# ---------------------------------------------------------------- rpm
log "rpm metadata: $(basename "$rpm_file")"
check "rpm version is $version" test "$(rpm -qp --qf '%{VERSION}' "$rpm_file" 2>/dev/null)" = "$version"
{
  printf '%s\n' /etc/petracache /etc/petracache/petracache.ini /usr/bin/petracache \
    /usr/lib/systemd/system/petracache.service /usr/share/man/man8/petracache.8 \
    /usr/share/doc/petracache /var/lib/petracache
  for f in "$SRCROOT"/README.md "$SRCROOT"/docs/*.md; do
    [[ -f "$f" ]] && echo "/usr/share/doc/petracache/$(basename "$f")"
  done
} | sort >"$TMP/rpm.expected"
# Build-id links are rpm's own; Debian's rpm cannot gzip man pages (its brp-compress needs bash).
rpm -qlp "$rpm_file" 2>/dev/null | grep -v '^/usr/lib/\.build-id' | sed 's/\.8\.gz$/.8/' | sort >"$TMP/rpm.files"
check "rpm -qlp lists exactly the expected files" diff "$TMP/rpm.expected" "$TMP/rpm.files"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' \
  "$rpm_file" >"$TMP/rpm.attrs" 2>/dev/null
check "rpm: petracache.ini is %config(noreplace)" grep -q '^cn .* /etc/petracache/petracache.ini$' "$TMP/rpm.attrs"
check "rpm: /var/lib/petracache is drwxr-x--- petracache:petracache" \
  grep -q ' drwxr-x--- petracache:petracache /var/lib/petracache$' "$TMP/rpm.attrs"
check "rpm: docs flagged %doc" grep -q '^d .* /usr/share/doc/petracache/' "$TMP/rpm.attrs"
rpm -qp --scripts "$rpm_file" >"$TMP/rpm.scripts" 2>/dev/null
check "rpm %pre creates the user and group" \
  bash -c "grep -q 'useradd -r -g petracache' '$TMP/rpm.scripts' && grep -q 'groupadd -r petracache' '$TMP/rpm.scripts'"
check "rpm %post presets, %preun disables on erase, %postun try-restarts" \
  bash -c "grep -q 'preset petracache.service' '$TMP/rpm.scripts' && grep -q 'disable --now petracache.service' '$TMP/rpm.scripts' && grep -q 'try-restart petracache.service' '$TMP/rpm.scripts'"
rpm -qp --requires "$rpm_file" >"$TMP/rpm.requires" 2>/dev/null
check "rpm requires shadow-utils and systemd, no Debian sonames" \
  bash -c "grep -q '^shadow-utils' '$TMP/rpm.requires' && grep -q '^systemd' '$TMP/rpm.requires' && ! grep -q 'librocksdb' '$TMP/rpm.requires'"
mkdir -p "$TMP/rpm-root"
rpm2archive - <"$rpm_file" | tar -xz -C "$TMP/rpm-root"
check "rpm and deb ship the same petracache.ini" \
  cmp "$TMP/rpm-root/etc/petracache/petracache.ini" "$TMP/deb-root/etc/petracache/petracache.ini"
check "rpm ships packaging/petracache.service" \
  cmp "$SRCROOT/packaging/petracache.service" "$TMP/rpm-root/usr/lib/systemd/system/petracache.service"
check "rpm binary reports $version" \
  bash -c "'$TMP/rpm-root/usr/bin/petracache' --version | grep -q 'petracache $version '"

finish
