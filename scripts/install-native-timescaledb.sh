#!/usr/bin/env bash
# Build and install TimescaleDB 2.23.1 from its source tarball into the
# PostgreSQL that `pg_config` on PATH names (Debian's postgresql-15 by default):
# the native engine of rmp (`rmp db start --engine native`, RMP_TEST_ENGINE).
#
#   bash scripts/install-native-timescaledb.sh [SOURCE_TARBALL]
#
# SOURCE_TARBALL defaults to ../shared/vendor/timescaledb-2.23.1.tar.gz next to
# the repository. Idempotent: nothing is done when this build (version and
# patches, recorded in a marker file) is already installed. Missing build
# dependencies (postgresql-server-dev-N, cmake, a C compiler) come from apt.
# DESTDIR=/some/dir installs into a staging directory instead (for packaging,
# or to try the build without touching the system).
#
# scripts/patches/*.patch are applied to the source first; see each patch for
# why (timescaledb-2.23.1-job-portal.patch: every background job failed on
# PostgreSQL 15.20 with "cannot drop portal while it is being set up").
set -euo pipefail

VERSION=2.23.1
NAME=install-native-timescaledb
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL=${1:-$REPO/../shared/vendor/timescaledb-$VERSION.tar.gz}
DESTDIR=${DESTDIR:-}
T0=$(date +%s)

say() { echo "$NAME: $*"; }
fail() { echo "$NAME: error: $*" >&2; exit 1; }
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

APT_UPDATED=
apt_install() {
    command -v apt-get >/dev/null || fail "$* missing and apt-get not available: install $* with your package manager"
    say "apt-get install $*"
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >/dev/null || fail "apt-get update failed (needs root and a Debian/Ubuntu package mirror)"
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
        || fail "apt-get install $* failed"
}

# -- which PostgreSQL --------------------------------------------------------
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || true)}
if [ -z "$PG_CONFIG" ] && [ -x /usr/lib/postgresql/15/bin/pg_config ]; then
    PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
fi
if [ -z "$PG_CONFIG" ]; then
    apt_install postgresql-15
    PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
fi
[ -x "$PG_CONFIG" ] || fail "pg_config not found: install PostgreSQL 15 (apt-get install postgresql-15)"
PG_MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
BINDIR=$("$PG_CONFIG" --bindir)
SHAREDIR=$("$PG_CONFIG" --sharedir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
[ -x "$BINDIR/postgres" ] || apt_install "postgresql-$PG_MAJOR"

# -- already installed? --------------------------------------------------------
PATCHES=("$REPO"/scripts/patches/timescaledb-"$VERSION"-*.patch)
[ -e "${PATCHES[0]}" ] || PATCHES=()
BUILD_ID="timescaledb $VERSION patches:$(cat "${PATCHES[@]}" /dev/null | sha256sum | cut -c1-16)"
MARKER="$DESTDIR$SHAREDIR/extension/timescaledb-$VERSION.rmp-build"
CONTROL="$DESTDIR$SHAREDIR/extension/timescaledb.control"
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$BUILD_ID" ] && [ -f "$CONTROL" ] \
    && grep -q "default_version = '$VERSION'" "$CONTROL" && [ -f "$DESTDIR$PKGLIBDIR/timescaledb-$VERSION.so" ]; then
    say "timescaledb $VERSION already installed for PostgreSQL $PG_MAJOR ($PG_CONFIG); nothing to do"
    exit 0
fi
if [ -f "$CONTROL" ] && grep -q "default_version = '$VERSION'" "$CONTROL"; then
    say "timescaledb $VERSION is installed for PostgreSQL $PG_MAJOR but not with this build's patches; rebuilding"
fi

# -- build dependencies --------------------------------------------------------
[ -f "$TARBALL" ] || fail "source tarball $TARBALL not found (pass its path: $0 timescaledb-$VERSION.tar.gz)"
[ -f "$("$PG_CONFIG" --pgxs)" ] || apt_install "postgresql-server-dev-$PG_MAJOR"
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v gcc >/dev/null || command -v cc >/dev/null || missing+=(gcc)
command -v patch >/dev/null || missing+=(patch)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# -- build ---------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/timescaledb-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG=$WORK/build.log
say "building timescaledb $VERSION for PostgreSQL $PG_MAJOR from $TARBALL (log: $LOG while it runs)"
tar -xzf "$TARBALL" -C "$WORK" || fail "cannot unpack $TARBALL"
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb*' | head -1)
[ -n "$SRC" ] && [ -f "$SRC/bootstrap" ] || fail "$TARBALL does not hold a timescaledb source tree"
for p in "${PATCHES[@]}"; do
    patch -d "$SRC" -p1 --quiet < "$p" >>"$LOG" 2>&1 || fail "patch $(basename "$p") does not apply to $TARBALL"
    say "applied $(basename "$p")"
done
run_step() {  # run_step LABEL CMD...: output to the build log, kept on failure
    local t
    t=$(date +%s)
    if ! "${@:2}" >>"$LOG" 2>&1; then
        cp "$LOG" "${TMPDIR:-/tmp}/timescaledb-build-failed.log"
        tail -15 "$LOG" >&2
        fail "$1 failed; full log: ${TMPDIR:-/tmp}/timescaledb-build-failed.log"
    fi
    say "$1 done in $(( $(date +%s) - t )) s"
}
cd "$SRC"
run_step "configure" ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF -DCMAKE_BUILD_TYPE=Release -DSEND_TELEMETRY_DEFAULT=NO
cd build
run_step "compile" make -j"$(nproc)"
STAGE=$WORK/stage
run_step "stage" make install DESTDIR="$STAGE"
mkdir -p "$STAGE$SHAREDIR/extension"
echo "$BUILD_ID" > "$STAGE$SHAREDIR/extension/timescaledb-$VERSION.rmp-build"

# Each file is copied next to its target and renamed over it: a running server
# keeps the library it mapped (overwriting it in place could crash it).
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ] && ! [ -w "$PKGLIBDIR" ]; then
    command -v sudo >/dev/null || fail "$PKGLIBDIR is not writable: run as root, or set DESTDIR"
fi
n=0
while IFS= read -r -d '' f; do
    rel=${f#"$STAGE"}
    dest=$DESTDIR$rel
    as_root mkdir -p "$(dirname "$dest")"
    as_root cp "$f" "$dest.rmp-new" && as_root mv -f "$dest.rmp-new" "$dest" || fail "cannot install $dest"
    n=$((n + 1))
done < <(find "$STAGE" -type f -print0)
say "installed timescaledb $VERSION ($n files) for PostgreSQL $PG_MAJOR${DESTDIR:+ into $DESTDIR} in $(elapsed)"
