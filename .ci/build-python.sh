#!/usr/bin/env bash
# Provide CPython VERSION for CI in a prefix of its own and print the interpreter's path (a python on
# which `python -m venv` and `python -m pip` work, so `make test PYTHON=...` can use it):
#   3.12         pyenv's ~/.pyenv/versions/3.12.* (exit 3 when this machine has none)
#   3.13, 3.13t  built from Debian trixie's source package (3.13t: --disable-gil)
#   3.14, 3.15   Debian sid's binary packages unpacked into the prefix (Debian serves no 3.14 source),
#                with tkinter (python3.X-tk, sid's Tcl/Tk and X libraries)
# Prefixes live under $IPYMINI_PYTHONS (default /opt/ipymini-pythons); a working one is reused.
# Nothing is installed into the system and the machine's apt state is untouched: apt-get runs with a
# private configuration (its own sources, lists, cache and an empty dpkg status) under $root/.apt.
set -euo pipefail
version="${1:?usage: build-python.sh 3.12|3.13|3.13t|3.14|3.15}"
base="${version%t}"
root="${IPYMINI_PYTHONS:-/opt/ipymini-pythons}"
prefix="$root/$version"
say() { echo "build-python.sh $version: $*" >&2; }
modules="import ssl, sqlite3, ctypes, zlib, lzma, bz2, readline, uuid, decimal, hashlib, json, venv"
works() { "$1" -c "$modules" 2>/dev/null && "$1" -m pip --version >/dev/null 2>&1; }

# apt-get with a private configuration for one suite: sources, lists, cache and dpkg status of its own
apt_private() {  # SUITE TYPE(deb|deb-src) -> sets APT=(apt-get -o ...), updating the lists once
  local dir="$root/.apt/$1-$2"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  cat >"$dir/apt.sources" <<SRC
Types: $2
URIs: http://deb.debian.org/debian
Suites: $1
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  touch "$dir/status"
  APT=(apt-get -qq -o "Dir::Etc::sourcelist=$dir/apt.sources" -o Dir::Etc::sourceparts=/dev/null
       -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "Dir::State::status=$dir/status"
       -o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=/dev/null
       -o APT::Sandbox::User=root)
  if [[ ! -f "$dir/updated" || -n "$(find "$dir/updated" -mmin +360)" ]]; then
    "${APT[@]}" update >&2 && touch "$dir/updated"
  fi
}

# pip into a venv from pip's own wheel (Debian's interpreters have no ensurepip wheel)
pip_from_wheel() {  # VENV_PYTHON
  local wheels; wheels="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$wheels" pip >&2
  "$1" "$(echo "$wheels"/pip-*.whl)/pip" install -q "$(echo "$wheels"/pip-*.whl)" >&2
  rm -rf "$wheels"
}

from_pyenv() {
  local found
  found="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$base".* 2>/dev/null | sort -V | tail -1)" || true
  if [[ -z "$found" ]] || ! works "$found/bin/python$base"; then
    say "no pyenv CPython $base on this machine"; exit 3
  fi
  echo "$found/bin/python$base"
}

from_source() {  # trixie's source package: configure, make, altinstall
  local exe="$prefix/bin/python$version" work
  if works "$exe"; then echo "$exe"; return; fi
  apt_private trixie deb-src
  work="$(mktemp -d "/tmp/ipymini-python-$version.XXXXXX")"
  chmod 755 "$work"; cd "$work"
  "${APT[@]}" source --download-only "python$base/trixie" >&2 || {
    say "Debian's archive does not serve python$base's source here"; rm -rf "$work"; exit 3; }
  tar xf python"$base"_*.orig.tar.xz
  cd Python-"$base"*/
  local extra=(); [[ "$version" == *t ]] && extra+=(--disable-gil)
  say "building in $work (log: $work/build.log)"
  {
    ./configure -q --prefix="$prefix" --with-ensurepip=install --disable-test-modules "${extra[@]}"
    make -s -j"$(nproc)"
    make -s altinstall
  } >"$work/build.log" 2>&1 || { tail -50 "$work/build.log" >&2; exit 1; }
  cd / && rm -rf "$work"
  works "$exe" || { say "the built interpreter does not work"; exit 1; }
  echo "$exe"
}

from_sid_binaries() {  # sid's .debs unpacked into the prefix; the interpreter runs on sid's libc
  local exe="$prefix/venv/bin/python$base" py="$prefix/usr/bin/python$base" lib="$prefix/usr/lib/x86_64-linux-gnu"
  if works "$exe" && "$exe" -c "import tkinter" 2>/dev/null; then echo "$exe"; return; fi
  local tools="$root/.tools/patchelf"
  if [[ ! -x "$tools/usr/bin/patchelf" ]]; then  # Debian's patchelf for this machine, unpacked privately
    apt_private "$(. /etc/os-release && echo "$VERSION_CODENAME")" deb
    local tmp; tmp="$(mktemp -d)"; mkdir -p "$tools"
    (cd "$tmp" && "${APT[@]}" download patchelf >&2 && dpkg-deb -x patchelf_*.deb "$tools")
    rm -rf "$tmp"
  fi
  apt_private sid deb
  local debs; debs="$(mktemp -d "/tmp/ipymini-python-$version.XXXXXX")"
  (cd "$debs" && "${APT[@]}" download "python$base-minimal" "libpython$base-minimal" \
      "libpython$base-stdlib" "python$base" libc6 libgcc-s1 libexpat1 zlib1g libbz2-1.0 libdb5.3t64 \
      libffi8 liblzma5 libncursesw6 libreadline8t64 libsqlite3-0 libssl3t64 libtinfo6 libuuid1 \
      libzstd1 libcrypt1 libmpdec4 \
      "python$base-tk" libtcl8.6 libtk8.6 libfontconfig1 fontconfig-config libfreetype6 libpng16-16t64 \
      libbrotli1 libx11-6 libx11-data libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 libxft2 libxrender1 \
      libxss1 libxext6 >&2) || { say "sid does not serve python$base here"; exit 3; }
  rm -rf "$prefix"; mkdir -p "$prefix"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
  rm -rf "$debs"
  # DT_RPATH, not RUNPATH: it also applies to the libraries and extension modules the interpreter
  # loads, so they find sid's libc, libssl, ... rather than the machine's
  "$tools/usr/bin/patchelf" --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath \
      --set-rpath "$lib" "$py"
  # Tcl looks for its scripts where Debian installs them (/usr/share/tcltk): this machine's own Tcl, of
  # another version, may be there. Every interpreter of this stdlib (venvs too) is pointed at sid's.
  rm -f "$prefix/usr/lib/python$base/sitecustomize.py"  # (Debian's: a link to /etc/python3.X)
  cat >"$prefix/usr/lib/python$base/sitecustomize.py" <<PY
import os
os.environ.setdefault("TCL_LIBRARY", "$prefix/usr/share/tcltk/tcl8.6")
os.environ.setdefault("TK_LIBRARY", "$prefix/usr/share/tcltk/tk8.6")
PY
  "$py" -m venv --without-pip "$prefix/venv"
  pip_from_wheel "$prefix/venv/bin/python"
  works "$exe" || { say "the unpacked interpreter does not work"; exit 1; }
  echo "$exe"
}

mkdir -p "$root"
exec 9>"$root/.build-$version.lock"
flock 9   # a second build of the same version waits for the first, then finds it done
case "$version" in
  3.12) from_pyenv ;;
  3.13|3.13t) from_source ;;
  3.14|3.15) from_sid_binaries ;;
  *) echo "build-python.sh: unknown version $version" >&2; exit 2 ;;
esac
