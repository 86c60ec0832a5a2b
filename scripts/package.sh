#!/usr/bin/env bash
# Builds the Debian package dist/op25b_<version>_<arch>.deb (as root, on Debian 12).
#
# dh-virtualenv bundles a venv made with the system python3 (op25b, PyYAML and the
# compiled netfilterqueue binding) under /opt/venvs/op25b; debian/ says what else goes
# in. The build runs on a copy of the tracked source in build/deb/, so the work tree
# stays clean and dpkg-buildpackage's output (written to the parent directory) stays
# inside build/. The package version is pyproject.toml's.
#
# The inputs (every tracked or new file except tests/ and bench/) are hashed; when
# dist/ already holds a package built from the same inputs the build is skipped
# (--force rebuilds). Prints the path of the package on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: $0 [--force]"; exit 0 ;;
        *) echo "package: unknown argument: $arg (usage: $0 [--force])" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "package: run as root (installs the build dependencies with apt-get)" >&2
    exit 3
fi
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "package: run from a git checkout of op25b (the build copies the tracked files)" >&2
    exit 3
fi

BUILD_DEPS=(debhelper dh-virtualenv build-essential python3-dev python3-venv
            libnetfilter-queue-dev libnfnetlink-dev dpkg-dev)
missing=()
for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "package: installing build dependencies: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

version=$(/usr/bin/python3 -c \
    'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
arch=$(dpkg --print-architecture)
deb="dist/op25b_${version}_${arch}.deb"

# Files, not the git index: an uncommitted edit must reach the package (and the hash).
mapfile -t files < <(git ls-files -co --exclude-standard | grep -v -E '^(tests|bench)/' | sort)
existing=()
for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
inputs=$(sha256sum -- "${existing[@]}" | sha256sum | cut -d' ' -f1)
if [ "$force" -eq 0 ] && [ -f "$deb" ] && [ "$(cat "$deb.inputs" 2>/dev/null)" = "$inputs" ]; then
    echo "package: $deb is up to date" >&2
    echo "$deb"
    exit 0
fi

stage="build/deb/op25b-${version}"
rm -rf build/deb
mkdir -p "$stage" dist
tar -cf - -- "${existing[@]}" | tar -xf - -C "$stage"
# The changelog only carries the version, so it is written here from pyproject.toml
# instead of being kept in step by hand.
cat > "$stage/debian/changelog" <<CHANGELOG
op25b (${version}) unstable; urgency=medium

  * Built from the op25b source tree by scripts/package.sh.

 -- op25b developers <op25b@localhost>  $(date -R)
CHANGELOG

echo "package: building $deb" >&2
start=$SECONDS
if ! (cd "$stage" && dpkg-buildpackage -b -us -uc > ../build.log 2>&1); then
    tail -n 40 build/deb/build.log >&2
    echo "package: dpkg-buildpackage failed; full log in build/deb/build.log" >&2
    exit 1
fi
mv "build/deb/op25b_${version}_${arch}.deb" "$deb"
echo "$inputs" > "$deb.inputs"
echo "package: built $deb in $((SECONDS - start)) s" >&2
echo "$deb"
