#!/bin/sh
# Runs every test suite given (cmocka binaries, or *.sh scripts that end with a line
# "NAME: N passed, N failed"), even after a failure, and ends with one total line
# ("tests: N passed, N failed, N skipped"). Exit status 1 if any suite failed.
set -u
passed=0; failed=0; skipped=0; bad=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    echo "== $name"
    case "$t" in
    *.sh) if sh "$t" >"$log" 2>&1; then rc=0; else rc=$?; fi ;;
    *) if "$t" >"$log" 2>&1; then rc=0; else rc=$?; fi ;;
    esac
    cat "$log"
    p=$(sed -n -e 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' \
        -e 's/^[a-z]*: \([0-9]*\) passed, [0-9]* failed$/\1/p' "$log" | tail -n 1)
    f=$(sed -n -e 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' \
        -e 's/^[a-z]*: [0-9]* passed, \([1-9][0-9]*\) failed$/\1/p' "$log" | tail -n 1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -n 1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    if [ "$rc" -ne 0 ] || [ -z "$p$f" ]; then
        bad="$bad $name"
        [ -n "$f" ] || failed=$((failed + 1)) # a crash or missing summary counts as a failure
    fi
done
echo
[ -z "$bad" ] || echo "failed suites:$bad"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ -z "$bad" ]
