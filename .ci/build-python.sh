#!/usr/bin/env bash
# Build CPython VERSION (3.13, 3.14; "3.14t" = free-threaded) from Debian's source package into
# $IPYMINI_PYTHONS/VERSION (default /opt/ipymini-pythons) and print the interpreter's path.
# Skips the build when the prefix already has a working interpreter. Needs root (apt-get) the first time.
# Only Debian's *source* packages are used: trixie/sid binaries would pull a newer libc into the system.
set -euo pipefail
version="${1:?usage: build-python.sh 3.13|3.14|3.14t}"
base="${version%t}"
prefix="${IPYMINI_PYTHONS:-/opt/ipymini-pythons}/$version"
exe="$prefix/bin/python$version"
case "$base" in
  3.13) suite=trixie ;;
  *) suite=sid ;;
esac
configure_extra=()
[[ "$version" == *t ]] && configure_extra+=(--disable-gil)

if "$exe" -c 'import ssl, sqlite3, ctypes, zlib, lzma, bz2, readline' 2>/dev/null \
   && "$exe" -m pip --version >/dev/null 2>&1; then
  echo "$exe"; exit 0
fi

mkdir -p "$(dirname "$prefix")"
exec 9>"$(dirname "$prefix")/.build-$version.lock"
flock 9   # a second build of the same version waits for the first, then finds it done
if "$exe" -m pip --version >/dev/null 2>&1; then echo "$exe"; exit 0; fi

src_list="/etc/apt/sources.list.d/ipymini-$suite-src.sources"
if [[ ! -f "$src_list" ]]; then
  cat >"$src_list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq >&2
fi
work="$(mktemp -d /tmp/ipymini-python-$version.XXXXXX)"
chmod 755 "$work"; cd "$work"
if ! apt-get source --download-only -qq "python$base/$suite" >&2; then
  apt-get update -qq >&2   # the index may be older than the archive
  apt-get source --download-only -qq "python$base/$suite" >&2 || {
    echo "build-python.sh: Debian's archive does not serve python$base's source here" >&2
    rm -rf "$work"; exit 3; }
fi
tar xf python"$base"_*.orig.tar.xz
cd Python-"$base"*/
{
  ./configure -q --prefix="$prefix" --with-ensurepip=install "${configure_extra[@]}"
  make -s -j"$(nproc)"
  make -s altinstall
} >"$work/build.log" 2>&1 || { tail -50 "$work/build.log" >&2; exit 1; }
"$exe" -m ensurepip >&2 || true
cd / && rm -rf "$work"
echo "$exe"
