#!/bin/sh
# Installs the C library: libshmlease.so, libshmlease.a (both stripped of debug
# information), shmlease.h and shmlease.pc.
#
#   cargo build --release -p shmlease-ffi
#   ffi/install.sh [PREFIX]            # default PREFIX: /usr/local
#
# Environment: LIBDIR (default PREFIX/lib); SHMLEASE_LIB_DIR, the directory that holds
# the built libraries (default: the `release` directory of cargo's target directory, as
# `cargo metadata` reports it, so CARGO_TARGET_DIR and a shared target directory are
# found); DESTDIR (staging root for packagers); STRIP (default strip).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
libdir=${LIBDIR:-$prefix/lib}
dest=${DESTDIR:-}
strip=${STRIP:-strip}

if [ -n "${SHMLEASE_LIB_DIR:-}" ]; then
    from=$SHMLEASE_LIB_DIR
elif target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') && [ -n "$target" ]; then
    from=$target/release
else
    echo "install.sh: cannot ask cargo where it builds (is cargo on PATH?); set SHMLEASE_LIB_DIR to the directory that holds libshmlease.so and libshmlease.a" >&2
    exit 1
fi

for f in "$from/libshmlease.so" "$from/libshmlease.a"; do
    if [ ! -f "$f" ]; then
        echo "install.sh: $f not found; build it with \`cargo build --release -p shmlease-ffi\`, or set SHMLEASE_LIB_DIR to the directory that holds libshmlease.so and libshmlease.a" >&2
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
# The standard library's debug information comes with every build (the static library
# is an archive: no linker has stripped it); installed libraries do without.
if command -v "$strip" >/dev/null 2>&1; then
    "$strip" --strip-unneeded "$dest$libdir/libshmlease.so"
    "$strip" --strip-debug "$dest$libdir/libshmlease.a"
else
    echo "install.sh: $strip not found: installed the libraries unstripped" >&2
fi

# The template's comment explains the placeholders; the installed file says where it
# came from. Values are escaped for sed (a prefix may contain | or &).
esc() { printf '%s' "$1" | sed 's/[\\|&]/\\&/g'; }
{
    echo "# pkg-config file for libshmlease $version, installed by shmlease's ffi/install.sh."
    sed -e '/^#/d' -e "s|@PREFIX@|$(esc "$prefix")|g" -e "s|@LIBDIR@|$(esc "$libdir")|g" \
        -e "s|@VERSION@|$(esc "$version")|g" "$root/ffi/shmlease.pc.in"
} > "$dest$libdir/pkgconfig/shmlease.pc"
chmod 0644 "$dest$libdir/pkgconfig/shmlease.pc"

echo "installed libshmlease $version into $dest$prefix (pkg-config file: $dest$libdir/pkgconfig/shmlease.pc)"
