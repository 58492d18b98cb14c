#!/bin/sh
# End-to-end checks of the fifolab command line: --help, --version, exit codes, and the
# error message for an unknown command. Usage: tests/cli.sh [PATH/TO/fifolab]
# (default: $FL_CLI_BIN, else ./fifolab)
set -u
bin=${1:-${FL_CLI_BIN:-./fifolab}}
pass=0; fail=0
check() { # name, expected exit code, command..., with $out holding stdout+stderr
    name=$1; want=$2; shift 2
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -eq "$want" ]; then pass=$((pass + 1)); else
        fail=$((fail + 1)); echo "FAIL $name: exit $rc, expected $want"; echo "$out" | head -5; fi
}
contains() { # name, needle (checked in $out)
    case "$out" in *"$2"*) pass=$((pass + 1)) ;; *) fail=$((fail + 1)); echo "FAIL $1: output lacks '$2'" ;; esac
}
check help 0 "$bin" --help;               contains help-lists-backends "backends"
check version 0 "$bin" --version;         contains version-string "fifolab 0."
check no-args 2 "$bin";                   contains no-args-usage "usage:"
check version-extra 2 "$bin" --version extra; contains version-extra-named "'extra'"
check unknown 2 "$bin" frobnicate;        contains unknown-names-it "unknown command 'frobnicate'"
check version-help 0 "$bin" version --help; contains version-help-usage "usage:"
check help-help 0 "$bin" help -h
check data-info-option 2 "$bin" data info --bogus; contains data-info-option-named "unknown option '--bogus'"
check eval-unknown-last 2 "$bin" eval somerun --bogus; contains eval-unknown-last-named 'unknown option "--bogus"'
check eval-missing-value 2 "$bin" eval somerun --window; contains eval-missing-value-named "--window: missing its value"
check run-index-bad 2 "$bin" run x.lua --index -1; contains run-index-bad-named '--index: expected an integer >= 0, got "-1"'
check export-fps-bad 2 "$bin" export somerun --fps 0; contains export-fps-bad-named '--fps: expected an integer in [1, 240], got "0"'
check backends-help 0 "$bin" backends --help
check backends-extra 2 "$bin" backends extra; contains backends-extra-named "'extra'"
check backends 0 "$bin" backends;         contains backends-cpu "cpu      ok"
contains backends-ref "cpu-ref  ok"
# fifolab inspect, on a safetensors file written here (u64 header length, JSON, data)
ck=$(mktemp -d)
hdr='{"__metadata__":{"format":"pt"},"enc.w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"dec.b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}'
{ printf "\\$(printf %03o ${#hdr})"; printf '\0\0\0\0\0\0\0%s' "$hdr"; printf '\0\0\0\0\0\0\0\0\0\0\0\0'; } >"$ck/m.safetensors"
head -c $((8 + ${#hdr} + 8)) "$ck/m.safetensors" >"$ck/cut.safetensors"
check help-lists-inspect 0 "$bin" --help;  contains help-inspect "inspect"
check inspect 0 "$bin" inspect "$ck/m.safetensors"
contains inspect-name "enc.w"; contains inspect-dtype "F16"; contains inspect-meta "format = pt"
contains inspect-total "total:    2 tensors, 4 elements, 12 bytes"
check inspect-filter 0 "$bin" inspect --filter dec. "$ck/m.safetensors"
contains inspect-filtered "1 tensor of 2 (filter 'dec.')"
check inspect-help 0 "$bin" inspect --help;  contains inspect-help-filter "--filter PREFIX"
check inspect-missing 1 "$bin" inspect "$ck/nope.safetensors"
contains inspect-missing-named "$ck/nope.safetensors: cannot open"
check inspect-broken 1 "$bin" inspect "$ck/cut.safetensors"
contains inspect-broken-named "$ck/cut.safetensors: tensor 'dec.b' ends at data byte 12"
check inspect-no-file 2 "$bin" inspect;      contains inspect-usage "usage: fifolab inspect"
check inspect-two 2 "$bin" inspect "$ck/m.safetensors" x; contains inspect-two-named "unexpected argument 'x'"
check inspect-option 2 "$bin" inspect --bogus "$ck/m.safetensors"; contains inspect-option-named "unknown option '--bogus'"
check inspect-filter-value 2 "$bin" inspect "$ck/m.safetensors" --filter
rm -rf "$ck"
# scripts/setup.sh counts a package that is installed but held ("hold ok installed") as
# present (it used to call it missing, so make failed for non-root users).
stub=$(mktemp -d)
printf '#!/bin/sh\nprintf "hold ok installed"\n' >"$stub/dpkg-query"
printf '#!/bin/sh\necho "apt-get must not run"; exit 1\n' >"$stub/apt-get"
chmod +x "$stub/dpkg-query" "$stub/apt-get"
check setup-held 0 env PATH="$stub:$PATH" sh "$(dirname "$0")/../scripts/setup.sh"
contains setup-held-present "all dependencies present"
# Not root and a package missing: nothing installed, exit 1, and the command to run is printed
# (with sudo, and without it as root). `id -u` is stubbed to a user's uid.
printf '#!/bin/sh
case "$*" in *libcmocka-dev*) exit 1 ;; *) printf "install ok installed" ;; esac
' >"$stub/dpkg-query"
printf '#!/bin/sh
echo 1000
' >"$stub/id"
chmod +x "$stub/dpkg-query" "$stub/id"
check setup-not-root 1 env PATH="$stub:$PATH" sh "$(dirname "$0")/../scripts/setup.sh"
contains setup-not-root-missing "missing Debian packages: libcmocka-dev"
contains setup-not-root-sudo "sudo apt-get update && sudo apt-get install -y --no-install-recommends libcmocka-dev"
contains setup-not-root-as-root "as root: apt-get update && apt-get install -y --no-install-recommends libcmocka-dev"
rm -rf "$stub"
# generate: resolved config, key errors named, a small run writes its files, deterministic.
check gen-help 0 "$bin" generate --help;  contains gen-help-out "frames.f32"
check gen-config 0 "$bin" generate --print-config --set scheduler.planner=partition
contains gen-config-planner 'module = "partition"'
check gen-badkey 2 "$bin" generate --set scheduler.planner.partitons=2
contains gen-badkey-named "scheduler.planner.partitons: unknown key; accepted:"
check gen-badval 2 "$bin" generate --set scheduler.planner.partitions=0
contains gen-badval-named "scheduler.planner.partitions: expected an integer"
check gen-badmod 2 "$bin" generate --set scheduler=fifoo
contains gen-badmod-named 'unknown module "fifoo"'
check gen-badarg 2 "$bin" generate --frobnicate
gdir=$(mktemp -d)
check gen-run 0 "$bin" generate -q --set frames=24 --set model.size=8,8 --out "$gdir/a"
contains gen-run-summary "24 frames"
for f in config.lua frames.f32 frames.txt preview.ppm schedule.tsv stats.tsv; do
    if [ -s "$gdir/a/$f" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL gen-run: no $f"; fi
done
bytes=$(wc -c <"$gdir/a/frames.f32")
if [ "$bytes" -eq $((24 * 3 * 8 * 8 * 4)) ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL gen-run: frames.f32 has $bytes bytes"; fi
check gen-rerun 0 "$bin" generate -q --set frames=24 --set model.size=8,8 --out "$gdir/b"
if cmp -s "$gdir/a/frames.f32" "$gdir/b/frames.f32"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL gen-rerun: frames differ"; fi
check gen-seed 0 "$bin" generate -q --set frames=24 --set model.size=8,8 --set seed=2 --out "$gdir/c"
if cmp -s "$gdir/a/frames.f32" "$gdir/c/frames.f32"; then fail=$((fail + 1)); echo "FAIL gen-seed: seed ignored"; else pass=$((pass + 1)); fi
check gen-badout 1 "$bin" generate -q --set frames=4 --set model.size=8,8 --out /proc/nonexistent/x
contains gen-badout-named "/proc/nonexistent"
rm -rf "$gdir"
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
