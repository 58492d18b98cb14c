#!/bin/sh
# End-to-end checks of `fifolab eval` on runs of the Gaussian testbed: the ranking test
# (FIFO with the exact denoiser scores the oracle errors at the level of sampling noise, a
# mismatched configuration clearly worse, and the network-free windowed metrics and the
# segment-level Frechet distance against `full` reference clips agree; tests/evalcheck.py
# prints the measured table), what eval writes (/metrics only, source = "eval", replaced in
# place, deterministic), runs it refuses (being written, killed), summarize, usage errors.
# Usage: tests/eval.sh [PATH/TO/fifolab]   (default: $FL_CLI_BIN, else ./fifolab)
set -u
. "$(dirname "$0")/lib.sh"
ec="$py $here/evalcheck.py"

# The testbed at rho = 0.95 (correlation length ~20 frames), 2 channels of 8 x 8, window 16.
# exact: FIFO with lookahead, n = 4 (S = 64), the exact denoiser; the oracle metrics are
# also computed online, so eval replaces series that exist. own: the mismatched network
# emulation, n = 1, no lookahead (S = 16). ref: the base model's own clips, `full` at
# S = 64 with the exact denoiser, 64 seeds (64 clips >= 2 D for D = 16 frames x 2 channels).
cat >exact.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "exact", seed = 1, frames = 1024,
  model = fl.model.gauss { window = 16, channels = 2, size = {8, 8}, rho = 0.95, drift = {0.5, 0.25},
                           mismatch = "exact" },
  noise = fl.noise.sqrt_linear { timesteps = 1000 },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 4 }, init = "clip" },
  metrics = { "oracle" },
}
LUA
cat >own.lua <<'LUA'
local fl = require "fifolab"
local e = fl.include "exact.lua"
e.name = "own"
e.model.mismatch = "own"
e.scheduler.planner = fl.planner.partition { partitions = 1 }
return e
LUA
cat >ref.lua <<'LUA'
local fl = require "fifolab"
local e = fl.include "exact.lua"
e.name = "ref"
e.frames = 16
e.metrics = {}
e.scheduler = fl.scheduler.full { steps = 64 }
local seeds = {}
for i = 1, 64 do seeds[i] = 1000 + i end
return fl.sweep { name = "ref", base = e, seeds = seeds }
LUA

check run-exact 0 "$bin" run exact.lua --out ex -q
check run-own 0 "$bin" run own.lua --out own -q
check run-ref 0 "$bin" run ref.lua --out ref -q
d_ex=$($ec digest ex/run.h5); d_own=$($ec digest own/run.h5)
online=$($ec series ex/run.h5 oracle_power_err)

# ---- eval: the ranking test ---------------------------------------------------------------
# the reference clips' own window values (one window each) are the sampling noise
check eval-ref 0 "$bin" eval ref
[ "$(echo "$out" | grep -c 'run.h5  (complete')" -eq 64 ] && ok || bad "eval of a directory: not its 64 runs"
check eval 0 "$bin" eval ex own --ref ref
contains eval-table "oracle_power_err"; contains eval-fd "fd_video"; contains eval-slope "slope/frame"
contains eval-ref "64 clips from 64 runs"
echo "$out" >eval.txt
$ec rank ex/run.h5 own/run.h5 ref >rank.txt 2>&1 && ok || { bad "ranking (tests/evalcheck.py rank)"; }
cat rank.txt
[ "$($ec digest ex/run.h5)" = "$d_ex" ] && ok || bad "eval changed something outside /metrics of ex"
[ "$($ec digest own/run.h5)" = "$d_own" ] && ok || bad "eval changed something outside /metrics of own"
[ "$($ec attr ex/run.h5 oracle_power_err source)" = eval ] && ok || bad "online series not marked source = eval"
[ "$($ec series ex/run.h5 oracle_power_err)" = "$online" ] && ok || bad "eval's oracle_power_err differs from the online one"
[ "$($ec attr own/run.h5 fd_segment per)" = window ] && ok || bad "fd_segment: per is not window"
[ "$($ec attr own/run.h5 fd_segment window)" = 256 ] && ok || bad "fd_segment: window is not 256 frames"
[ "$($ec attr own/run.h5 fd_video window)" = 1024 ] && ok || bad "fd_video: window is not the whole run"
[ "$($ec attr own/run.h5 fd_video reference_clips)" = 64 ] && ok || bad "fd_video: reference_clips"

# evaluating again: the same values, series rewritten in place (the file barely grows)
s1=$(wc -c <ex/run.h5); v1=$($ec series ex/run.h5 fd_segment); a1=$($ec series ex/run.h5 adjacent_ssim)
check eval-again 0 "$bin" eval ex --ref ref
[ "$($ec series ex/run.h5 fd_segment)" = "$v1" ] && [ "$($ec series ex/run.h5 adjacent_ssim)" = "$a1" ] && ok ||
    bad "eval again: values differ"
s2=$(wc -c <ex/run.h5)
[ $((s2 - s1)) -lt 65536 ] && ok || bad "eval again: the file grew by $((s2 - s1)) bytes"
check summarize 0 "$bin" summarize ex; contains summarize-fd "fd_video"; contains summarize-flicker "flicker"

# a subset; --window; --no-write leaves the file byte for byte
check eval-window 0 "$bin" eval own --metrics flicker --window 32
[ "$($ec attr own/run.h5 flicker window)" = 32 ] && ok || bad "--window 32 not recorded"
contains eval-window-motion "motion_window"   # motion comes along with flicker
cp ref/ref/*/run.h5 one.h5 2>/dev/null || cp "$(find ref -name run.h5 | head -1)" one.h5
sum1=$(cksum <one.h5)
check no-write 0 "$bin" eval one.h5 --no-write; contains no-write-says "not written"
[ "$(cksum <one.h5)" = "$sum1" ] && ok || bad "--no-write changed the file"
# a sweep directory: every run under it
# flattened features of 2-frame clips: D = 256 for 64 reference clips, warned about
check pool0 0 "$bin" eval own --metrics fd --ref ref --pool 0 --clip 2 --no-write
contains pool0-warn "fewer than 2"; contains pool0-flat "flattened"

# ---- runs it refuses ------------------------------------------------------------------------
cat >slow.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "slow", seed = 2, frames = 1000000,
  model = fl.model.gauss { window = 8, channels = 1, size = {8, 8}, rho = 0.9 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.partition { partitions = 2 } },
}
LUA
"$bin" run slow.lua --out slow -q >/dev/null 2>&1 &
pid=$!
i=0; while [ ! -s slow/run.h5 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep 0.2
check running 1 "$bin" eval slow; contains running-says "being written"
kill -TERM $pid; wait $pid
check interrupted 0 "$bin" eval slow --metrics stats; contains interrupted-note "rebuilds its run file"
FIFOLAB_TEST_DIE_AFTER=40 "$bin" run slow.lua --out dead -q --checkpoint-seconds 0 >/dev/null 2>&1
check killed 1 "$bin" eval dead; contains killed-says "is gone"; contains killed-resume "fifolab resume"

# ---- usage and input errors ------------------------------------------------------------------
check help 0 "$bin" eval --help; contains help-ref "--ref"
check no-args 2 "$bin" eval
check bad-metric 2 "$bin" eval ex --metrics adjacent,bogus; contains bad-metric-says 'unknown metric "bogus"'
check fd-no-ref 2 "$bin" eval ex --metrics fd; contains fd-no-ref-says "needs --ref"
check bad-window 2 "$bin" eval ex --window 1; contains bad-window-says "--window"
check bad-option 2 "$bin" eval ex --frobnicate
check missing 1 "$bin" eval nope; contains missing-named "nope"
check missing-ref 1 "$bin" eval ex --ref nope; contains missing-ref-named "nope"
check big-pool 1 "$bin" eval ex --ref ref --pool 9 --no-write; contains big-pool-says "--pool 9"
check short-segment 1 "$bin" eval ex --ref ref --segment 16 --no-write; contains short-segment-says "--segment 16"
check shape-ref 1 "$bin" eval ex --ref slow --no-write; contains shape-ref-says "reference"
echo "not hdf5" >junk.h5
check junk 1 "$bin" eval junk.h5; contains junk-named "junk.h5"
check one-bad-of-two 1 "$bin" eval nope ex --metrics stats; contains one-bad-evaluates-other "ex/run.h5  (complete"

finish eval
