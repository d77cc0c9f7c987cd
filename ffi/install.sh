#!/bin/sh
# Installs the C library: libshmlease.so, libshmlease.a, shmlease.h and shmlease.pc.
#
#   cargo build --release -p shmlease-ffi
#   ffi/install.sh [PREFIX]            # default PREFIX: /usr/local
#
# Environment: LIBDIR (default PREFIX/lib), SHMLEASE_LIB_DIR (where the built libraries
# are; default target/release), DESTDIR (staging root for packagers).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
libdir=${LIBDIR:-$prefix/lib}
from=${SHMLEASE_LIB_DIR:-$root/target/release}
dest=${DESTDIR:-}

for f in "$from/libshmlease.so" "$from/libshmlease.a"; do
    if [ ! -f "$f" ]; then
        echo "install.sh: $f not found; run: cargo build --release -p shmlease-ffi" >&2
        exit 1
    fi
done

header="$root/include/shmlease.h"
part() { sed -n "s/^#define SHMLEASE_VERSION_$1 \([0-9]*\)$/\1/p" "$header"; }
version="$(part MAJOR).$(part MINOR).$(part PATCH)"

install -d "$dest$libdir/pkgconfig" "$dest$prefix/include"
install -m 0644 "$header" "$dest$prefix/include/shmlease.h"
install -m 0755 "$from/libshmlease.so" "$dest$libdir/libshmlease.so"
install -m 0644 "$from/libshmlease.a" "$dest$libdir/libshmlease.a"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@VERSION@|$version|g" \
    "$root/ffi/shmlease.pc.in" > "$dest$libdir/pkgconfig/shmlease.pc"
chmod 0644 "$dest$libdir/pkgconfig/shmlease.pc"

echo "installed libshmlease $version into $dest$prefix (pkg-config file: $dest$libdir/pkgconfig/shmlease.pc)"
