#!/bin/sh
# make-config.sh SAMPLE OUT: derive the packaged /etc/petracache/petracache.ini from the
# repository's sample petracache.ini, so every key stays documented as the sample documents it.
# Exactly three settings differ (db_path, backup_dir, user) and a header names the packaged layout; each
# substitution must match exactly one line, so a renamed key fails the package build instead of
# silently shipping the development default.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 SAMPLE_INI OUT_INI" >&2
  exit 2
fi
sample=$1
out=$2

expect_one() {
  n=$(grep -c "$1" "$sample" || true)
  if [ "$n" -ne 1 ]; then
    echo "make-config.sh: expected exactly one line matching '$1' in $sample, found $n" >&2
    exit 1
  fi
}
expect_one '^db_path = '
expect_one '^backup_dir = *$'
expect_one '^user = *$'

tmp="$out.tmp.$$"
{
  echo '; Installed by the petracache package as /etc/petracache/petracache.ini (a conffile: your'
  echo '; edits are kept on upgrade). petracache.service runs "petracache --config" on this file as'
  echo '; user petracache; after a change run "systemctl restart petracache" (there is no reload).'
  echo '; Compared with the upstream sample only [storage] db_path and backup_dir (both inside the'
  echo '; service'"'"'s one writable directory, /var/lib/petracache) and [server] user differ; user'
  echo '; matters only when petracache is started by hand as root (the service is not root).'
  echo ';'
  sed \
    -e 's|^db_path = .*$|db_path = /var/lib/petracache/db|' \
    -e 's|^backup_dir = *$|backup_dir = /var/lib/petracache/backups|' \
    -e 's|^user = *$|user = petracache|' \
    "$sample"
} >"$tmp"
mv "$tmp" "$out"
