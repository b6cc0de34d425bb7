#!/usr/bin/env bash
# Builds the Debian package of the extension, postgresql-<major>-ledger, from the release build of
# `cargo pgrx package`: target/debian/postgresql-<major>-ledger_<version>_<arch>.deb.
#   scripts/package-deb.sh            # PostgreSQL 15
#   PG_CONFIG=/usr/lib/postgresql/16/bin/pg_config scripts/package-deb.sh
# Environment: PG_CONFIG (as scripts/install.sh), DEB_MAINTAINER ("Name <email>"; default: git's
# user.name and user.email). Prints the .deb's path as its last line. Needs dpkg-deb and binutils
# (strip); uses dpkg-shlibdeps (dpkg-dev) for the library dependencies when it is there, objdump if not.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
umask 022

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir=$("$PG_CONFIG" --sharedir)/extension
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$repo/$target

cargo_version=$(awk '/^\[/ { in_package = ($0 == "[package]") }
  in_package && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' Cargo.toml)
[[ -n $cargo_version ]] || { echo "package-deb: no version in Cargo.toml's [package]" >&2; exit 1; }
# A semver pre-release (0.2.0-rc.1) must sort before its release, which in Debian needs a tilde; and
# a hyphen would read as a Debian revision.
version=${cargo_version/-/\~}
package=postgresql-$major-ledger
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-}
if [[ -z $maintainer ]]; then
  name=$(git config user.name || true) email=$(git config user.email || true)
  if [[ -n $name && -n $email ]]; then
    maintainer="$name <$email>"
  else
    maintainer="ledger maintainers <maintainers@ledger.invalid>"
    echo "package-deb: warning: no DEB_MAINTAINER nor git identity; Maintainer: $maintainer" >&2
  fi
fi
# Reproducible: files, changelog date and archive members all carry the commit's time. Not exported
# to cargo: a build that sees SOURCE_DATE_EPOCH change rebuilds, so it and the other builds sharing
# target/ (scripts/install.sh, cargo pgrx test) would rebuild each other's release library in turn.
build_epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit+=" (with local changes)"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo pgrx --version >/dev/null 2>&1 || { echo "package-deb: no cargo-pgrx; run scripts/setup.sh" >&2; exit 1; }
echo "package-deb: cargo pgrx package (release) for PostgreSQL $major" >&2
cargo pgrx package --pg-config "$PG_CONFIG" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
staged=$target/release/ledger-pg$major
[[ -f $staged$pkglibdir/ledger.so && -f $staged$extdir/ledger.control ]] || {
  echo "package-deb: no ledger.so or ledger.control in $staged" >&2
  exit 1
}
staged_version=$(sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" "$staged$extdir/ledger.control")
[[ $staged_version == "$cargo_version" ]] || {
  echo "package-deb: the staged ledger.control says $staged_version, Cargo.toml $cargo_version" >&2
  exit 1
}

out=$target/debian
root=$out/$package
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root$pkglibdir" "$root$extdir" "$root/usr/bin" "$root/usr/share/doc/$package" \
  "$root/usr/share/man/man1"

# The module, stripped as Debian's own packages are (dh_strip): its exported functions stay in the
# dynamic symbol table, which is all the server looks them up in.
install -m 0644 "$staged$pkglibdir/ledger.so" "$root$pkglibdir/ledger.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root$pkglibdir/ledger.so"
install -m 0644 "$staged$extdir/ledger.control" "$root$extdir/"

# Every SQL script, each once: this version's install script as pgrx generated it, and sql/'s install
# scripts of older releases and upgrade scripts (pgrx copies the upgrade scripts into its staging
# directory too; these are the same files). For those, sql/ is the source: pgrx never empties its
# staging directory, so a script there may be left from an earlier build, say the install script it
# generated before a version bump, from whatever the source was then rather than from the release.
shopt -s nullglob
install -m 0644 "$staged$extdir/ledger--$cargo_version.sql" "$root$extdir/"
for script in sql/ledger--*.sql; do
  name=$(basename "$script")
  if [[ $name == "ledger--$cargo_version.sql" ]]; then
    cmp -s "$script" "$root$extdir/$name" ||
      echo "package-deb: warning: $script differs from the $name pgrx generated; packaging pgrx's" >&2
    continue
  fi
  install -m 0644 "$script" "$root$extdir/"
done
for script in "$staged$extdir"/ledger--*.sql; do
  name=$(basename "$script")
  if [[ ! -e $root$extdir/$name ]]; then
    echo "package-deb: warning: not packaging $name, left in $staged by an earlier build" >&2
  elif ! cmp -s "$script" "$root$extdir/$name"; then
    echo "package-deb: note: $staged has another $name (left by an earlier build); packaging sql/'s" >&2
  fi
done
shopt -u nullglob

# The offline verifier, by the interpreter Debian's python3 package provides (policy 10.4).
sed '1s|^#!.*python3.*$|#!/usr/bin/python3|' scripts/verify_export.py >"$root/usr/bin/ledger-verify-export"
chmod 0755 "$root/usr/bin/ledger-verify-export"
# Its manual page, made from its own --help so the two cannot drift apart.
{
  echo ".TH LEDGER-VERIFY-EXPORT 1 \"$(date -u -d "@$build_epoch" +%Y-%m-%d)\" \"ledger $cargo_version\" \"User Commands\""
  echo ".SH NAME"
  echo "ledger-verify-export \\- verify a ledger export, Merkle proof or digest offline"
  echo ".SH DESCRIPTION"
  echo "Checks an export of a PostgreSQL ledger table (JSON lines from"
  echo ".BR ledger.export ),"
  echo "an inclusion or consistency proof, or a signed digest, without the database, using only the"
  echo "Python standard library (Ed25519 signatures need python3\\-cryptography)."
  echo "The byte format is in /usr/share/doc/$package/FORMAT.md."
  echo ".PP"
  echo ".nf"
  COLUMNS=80 python3 "$root/usr/bin/ledger-verify-export" --help |
    sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^[.']/\\\\\\&&/"
  echo ".fi"
  echo ".SH SEE ALSO"
  echo "/usr/share/doc/$package/README.md, /usr/share/doc/$package/THREAT_MODEL.md"
} >"$root/usr/share/man/man1/ledger-verify-export.1"
gzip -9n "$root/usr/share/man/man1/ledger-verify-export.1"

doc=$root/usr/share/doc/$package
install -m 0644 README.md docs/FORMAT.md docs/THREAT_MODEL.md "$doc/"
first_year=$(git log --format=%ad --date=format:%Y 2>/dev/null | tail -n 1)
last_year=$(date -u -d "@$build_epoch" +%Y)
years=${first_year:-$last_year}
[[ $years == "$last_year" ]] || years="$years-$last_year"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ledger
Upstream-Contact: $maintainer

Files: *
Copyright: $years The ledger authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
EOF
# A native package's changelog (policy 12.7): one entry for the build.
{
  echo "$package ($version) unstable; urgency=medium"
  echo
  echo "  * ledger $cargo_version for PostgreSQL $major."
  echo "  * Built from commit $commit."
  echo
  echo " -- $maintainer  $(date -u -R -d "@$build_epoch")"
} | gzip -9n >"$doc/changelog.gz"

# Library dependencies: dpkg-shlibdeps reads Debian's symbols files; it wants a debian/control to
# run in, so give it one of its own. Without it, the newest glibc symbol version the module uses.
so=$root$pkglibdir/ledger.so
if command -v dpkg-shlibdeps >/dev/null; then
  shlib_dir=$(mktemp -d)
  mkdir "$shlib_dir/debian"
  printf 'Source: ledger\n\nPackage: %s\nArchitecture: any\n' "$package" >"$shlib_dir/debian/control"
  shlib_depends=$(cd "$shlib_dir" && dpkg-shlibdeps -O --warnings=0 "$so" | sed -n 's/^shlibs:Depends=//p')
  rm -rf "$shlib_dir"
else
  glibc=$(objdump -T "$so" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)
  shlib_depends="libc6 (>= $glibc)"
  for needed in $(objdump -p "$so" | awk '$1 == "NEEDED" { print $2 }'); do
    case $needed in
      libc.so.6 | ld-linux-*.so.2 | libm.so.6 | libpthread.so.0 | libdl.so.2) ;;
      libgcc_s.so.1) shlib_depends+=", libgcc-s1" ;;
      *) echo "package-deb: ledger.so needs $needed; install dpkg-dev for dpkg-shlibdeps" >&2; exit 1 ;;
    esac
  done
fi
[[ $shlib_depends == *libc6* ]] || { echo "package-deb: no libc6 dependency found" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: postgresql-$major, python3, $shlib_depends
Suggests: python3-cryptography
Section: database
Priority: optional
Description: tamper-evident, append-only hash-chained tables for PostgreSQL $major
 ledger makes a PostgreSQL table a tamper-evident, append-only SHA3-256 hash
 chain, enforced inside the database: a trigger computes each record's
 sequence number, previous hash and hash and refuses anything that is not a
 clean append, for every client. ledger.verify recomputes every hash and link
 and names the first changed record; Merkle checkpoints, optionally signed
 with Ed25519, catch deleted newest records and rewritten chains.
 .
 This package holds the extension for PostgreSQL $major (CREATE EXTENSION
 ledger) and ledger-verify-export, an offline verifier of exports, proofs and
 digests written with the Python standard library alone; checking digest
 signatures needs python3-cryptography.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -exec chmod 0644 {} +
chmod 0755 "$root/usr/bin/ledger-verify-export"
find "$root" -exec touch --no-dereference --date="@$build_epoch" {} +

deb=$out/${package}_${version}_$arch.deb
SOURCE_DATE_EPOCH=$build_epoch dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "package-deb: built $package $version ($arch): $(dpkg-deb --field "$deb" Depends)" >&2
echo "$deb"
