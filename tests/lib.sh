# Shared by the shell suites (`. "$(dirname "$0")/lib.sh"` right after `set -u`): the
# binary under test ($1, else $FL_CLI_BIN, else ./fifolab, made absolute), Debian's python
# and the h5py helper, the pass/fail counters and checks, and a scratch directory that is
# the working directory and is removed on exit. `finish NAME` prints the suite's last line
# ("NAME: N passed, M failed") and sets the exit status.
bin=${1:-${FL_CLI_BIN:-./fifolab}}
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
h5="$py $here/h5check.py"
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # name, expected exit code, command... ($out: stdout+stderr)
    name=$1; want=$2; shift 2
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -eq "$want" ]; then ok; else bad "$name: exit $rc, expected $want"; echo "$out" | tail -5; fi
}
contains() { case "$out" in *"$2"*) ok ;; *) bad "$1: output lacks '$2'"; echo "$out" | tail -3 ;; esac; }
finish() { echo "$1: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
cd "$t" || exit 1
