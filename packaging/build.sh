#!/usr/bin/env bash
# build.sh: build the PetraCache .deb and .rpm from this source tree into dist/.
#
#   packaging/build.sh [--deb] [--rpm] [--with-tests] [--from-head] [--keep]
#
#   --deb / --rpm   build only that package (default: both)
#   --with-tests    build and run the unit tests inside the package builds (slower)
#   --from-head     package the committed HEAD (git archive) instead of the working tree
#   --keep          keep the temporary build directory and print its path
#
# The version is meson.build's project version (the single source). The source is copied to a
# temporary directory (tracked and untracked-but-not-ignored files, so build dirs, data/ and
# dist/ stay out), packaging/debian/ is placed at debian/ there, and dpkg-buildpackage and
# rpmbuild run on the copy: the work tree is never written to except dist/.
# Also writes dist/petracache-VERSION.tar.gz, the source tarball rpmbuild uses (Source0).
# Needs: dpkg-dev, debhelper (deb; no fakeroot: Rules-Requires-Root is no); rpm (rpm); and the
# build dependencies listed in packaging/debian/control.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST="$ROOT/dist"
want_deb=0 want_rpm=0 with_tests=0 from_head=0 keep=0
for arg in "$@"; do
  case "$arg" in
    --deb) want_deb=1 ;;
    --rpm) want_rpm=1 ;;
    --with-tests) with_tests=1 ;;
    --from-head) from_head=1 ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
if ((want_deb == 0 && want_rpm == 0)); then want_deb=1 want_rpm=1; fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# run_logged LOG CMD...: run quietly into LOG; on failure show its tail.
run_logged() {
  local logfile=$1
  shift
  if ! "$@" >"$logfile" 2>&1; then
    echo "---- last 80 lines of $logfile ----" >&2
    tail -n 80 "$logfile" >&2
    die "failed: $*"
  fi
}

version=$(sed -n "s/^[[:space:]]*version:[[:space:]]*'\([^']*\)'.*/\1/p" "$ROOT/meson.build" | head -n 1)
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "cannot read the project version from meson.build (got '$version')"

for tool in $( ((want_deb)) && echo dpkg-buildpackage dh) $( ((want_rpm)) && echo rpmbuild); do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev debhelper rpm)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/petracache-pkg.XXXXXX")
cleanup() {
  if ((keep)); then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SRC="$WORK/petracache-$version"
mkdir -p "$SRC" "$DIST/logs"
log "copying the source tree (version $version)"
if ((from_head)); then
  git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$SRC"
elif git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Files deleted in the work tree but still tracked are skipped.
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -c -f -) | tar -x -C "$SRC"
else
  (cd "$ROOT" && tar -c -f - --exclude='./build*' --exclude=./dist --exclude=./data \
    --exclude=.git .) | tar -x -C "$SRC"
fi
[[ -f "$SRC/meson.build" && -f "$SRC/petracache.ini" ]] || die "source copy is incomplete"
rm -rf "$SRC/debian"

# Tarball for rpmbuild's Source0 (also a plain release tarball).
tarball="$WORK/petracache-$version.tar.gz"
tar -C "$WORK" -czf "$tarball" "petracache-$version"

cp "$tarball" "$DIST/"
outputs=("$DIST/$(basename "$tarball")")

if ((want_deb)); then
  cp -a "$ROOT/packaging/debian" "$SRC/debian"
  # The Debian version follows meson.build: when packaging/debian/changelog has no entry for this
  # upstream version yet, add a development entry to the copy (it sorts below a real -1 entry).
  top=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
  if [[ "${top%-*}" != "$version" ]]; then
    log "warning: packaging/debian/changelog has no entry for $version (top: $top); using $version-0~dev1"
    {
      printf 'petracache (%s-0~dev1) UNRELEASED; urgency=medium\n\n' "$version"
      printf '  * Development build of %s (no changelog entry yet).\n\n' "$version"
      printf ' -- PetraCache Maintainers <maintainers@petracache.invalid>  %s\n\n' "$(date -R)"
      cat "$SRC/debian/changelog"
    } >"$SRC/debian/changelog.new"
    mv "$SRC/debian/changelog.new" "$SRC/debian/changelog"
  fi
  deb_opts="parallel=$(nproc)"
  profiles=()
  if ((!with_tests)); then
    deb_opts="nocheck $deb_opts"
    profiles=(-Pnocheck)
  fi
  log "dpkg-buildpackage -us -uc -b (log: dist/logs/deb-build.log)"
  (cd "$SRC" && run_logged "$DIST/logs/deb-build.log" \
    env DEB_BUILD_OPTIONS="$deb_opts" nice dpkg-buildpackage -us -uc -b "${profiles[@]}")
  rm -f "$DIST"/petracache_*.deb "$DIST"/petracache-dbgsym_*.*deb "$DIST"/petracache_*.changes \
    "$DIST"/petracache_*.buildinfo
  shopt -s nullglob
  for f in "$WORK"/petracache_*.deb "$WORK"/petracache-dbgsym_*.*deb "$WORK"/petracache_*.changes \
    "$WORK"/petracache_*.buildinfo; do
    cp "$f" "$DIST/"
    [[ "$f" == *.deb ]] && outputs+=("$DIST/$(basename "$f")")
  done
  shopt -u nullglob
fi

if ((want_rpm)); then
  top="$WORK/rpmbuild"
  mkdir -p "$top"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
  cp "$tarball" "$top/SOURCES/"
  cp "$ROOT/packaging/rpm/petracache.spec" "$top/SPECS/"
  rpm_args=(
    --define "_topdir $top"
    --define "pc_version $version"
    # Built on Debian: see AutoReqProv in the spec.
    --define "pc_foreign_build 1"
    --nodeps
  )
  if ((with_tests)); then rpm_args+=(--with tests); fi
  log "rpmbuild -bb (log: dist/logs/rpm-build.log)"
  run_logged "$DIST/logs/rpm-build.log" nice rpmbuild "${rpm_args[@]}" -bb "$top/SPECS/petracache.spec"
  rm -f "$DIST"/petracache-*.rpm
  shopt -s nullglob
  for f in "$top"/RPMS/*/petracache-*.rpm; do
    cp "$f" "$DIST/"
    outputs+=("$DIST/$(basename "$f")")
  done
  shopt -u nullglob
fi

((${#outputs[@]} > 1)) || die "no package was produced"
for f in "${outputs[@]}"; do echo "$f"; done
