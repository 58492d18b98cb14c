#!/bin/sh
# Installs the Debian packages fifolab needs, and only those that are missing.
# Idempotent: when everything is present it prints one line and changes nothing.
set -eu

# Build and test dependencies, by Debian package name.
PACKAGES="pkg-config libopenblas-dev liblapacke-dev libfftw3-dev libhdf5-dev liblua5.4-dev libcmocka-dev
          libcjson-dev libzip-dev python3-h5py python3-numpy openmpi-bin libopenmpi-dev ffmpeg
          python3-matplotlib python3-nbconvert jupyter-nbconvert python3-ipykernel"
# `setup.sh PACKAGE...` checks/installs those instead (make fuzz: the clang/libFuzzer ones).
[ $# -eq 0 ] || PACKAGES="$*"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    # ${Status} is "WANT FLAG STATUS" (several concatenated for multi-arch packages): the
    # package is there when STATUS is "installed" whatever WANT is (install, hold, ...).
    case "$status" in
    *" ok installed"*) ;;
    *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    [ "${FL_SETUP_QUIET:-0}" = 1 ] || echo "setup: all dependencies present"
    exit 0
fi

echo "setup: missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: not running as root, so nothing was installed. Run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
    echo "(or, without sudo, as root: apt-get update && apt-get install -y --no-install-recommends$missing)" >&2
    echo "then run make again." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: apt-get not found; install these packages (Debian names):$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Install first from the lists already on the machine; refresh them only if that fails.
# shellcheck disable=SC2086
if ! apt-get install -y -q --no-install-recommends $missing; then
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
echo "setup: installed:$missing"
