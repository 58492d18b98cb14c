#!/bin/sh
# End-to-end checks of runs: `fifolab run/resume/plan/info/summarize` on small Lua
# experiments, read back with Debian's h5py (tests/h5check.py): the run file's layout,
# determinism, skip/refuse/--force, bit-identical resume after SIGKILL at random and chosen
# moments, SIGTERM, reading while written, a full disk, sweeps (--index, MPI).
# Usage: tests/runs.sh [PATH/TO/fifolab]   (default: $FL_CLI_BIN, else ./fifolab)
set -u
. "$(dirname "$0")/lib.sh"

# A small experiment (a queue of 20 frames of 2x8x8) and a slower one for the kill tests.
cat >small.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "small", seed = 3, frames = 96, oracle = true, snapshots = 16,
  model = fl.model.gauss { window = 4, channels = 2, size = {8, 8}, rho = 0.9, mismatch = "own" },
  noise = fl.noise.sqrt_linear { timesteps = 1000 },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = "clip" },
}
LUA
cat >slow.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "slow", seed = 5, frames = 1500,
  model = fl.model.gauss { window = 8, channels = 3, size = {16, 16}, rho = 0.9 },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 } },
}
LUA

# ---- one run: files, layout, provenance, determinism ----------------------------------------
check run 0 "$bin" run small.lua --out a -q
[ "$($h5 shape a/run.h5)" = "96 2 8 8" ] && ok || bad "run: frames shape $($h5 shape a/run.h5)"
[ "$($h5 attr a/run.h5 status)" = complete ] && ok || bad "run: status not complete"
$h5 layout a/run.h5 && ok || bad "run: layout"
$h5 script a/run.h5 small.lua && ok || bad "run: /config/script is not the script verbatim"
[ ! -e a/state.h5 ] && ok || bad "run: state.h5 left after completion"
check info 0 "$bin" info a
contains info-status "status      complete"; contains info-frames "96 of 96"
contains info-oracle "oracle"; contains info-snapshots "queue snapshots"; contains info-config 'module = "lookahead"'
check run-again-same 0 "$bin" run small.lua --out b -q
$h5 same a/run.h5 b/run.h5 && ok || bad "determinism: two runs of one configuration differ"
check skip 0 "$bin" run small.lua --out a;    contains skip-says "skipped (complete)"
check other-config 1 "$bin" run small.lua --out a -q --set frames=64
contains other-config-says "holds a run of another configuration"
[ "$($h5 shape a/run.h5)" = "96 2 8 8" ] && ok || bad "other-config: the existing run was touched"
check force 0 "$bin" run small.lua --out a -q --set frames=64 --force
[ "$($h5 shape a/run.h5)" = "64 2 8 8" ] && ok || bad "force: not rerun"
check timeline 0 "$bin" run small.lua --out tl -q --set frames=50 \
    --set 'timeline={{"red", 20}, {prompt = "blue", frames = 5}, {"red"}}'
[ "$($h5 conditions tl/run.h5)" = "red:20 blue:5 red:25" ] && ok || bad "timeline: conditions $($h5 conditions tl/run.h5)"
check timeline-bad 2 "$bin" run small.lua --out tl2 -q --set 'timeline={{prompt = "a", frame = 3}, {"b"}}'
contains timeline-bad-named "timeline[1].frames: missing"
check set-badkey 2 "$bin" run small.lua --out c -q --set scheduler.planner.partitons=2
contains set-badkey-named "scheduler.planner.partitons"
check unwritable 1 "$bin" run small.lua -q --out /proc/nonexistent/x
contains unwritable-named "/proc/nonexistent"
check help-run 0 "$bin" run --help; contains help-run-index "--index"
check help-resume 0 "$bin" resume --help
check help-plan 0 "$bin" plan --help
check help-info 0 "$bin" info --help
check help-summarize 0 "$bin" summarize --help
check no-script 2 "$bin" run
check missing-script 1 "$bin" run nope.lua; contains missing-script-named "nope.lua"

# ---- kill -9 at chosen and random moments, then resume: bit-identical ----------------------
check ref 0 "$bin" run slow.lua --out ref -q
for n in 1 37 700; do
    rm -rf k
    FIFOLAB_TEST_DIE_AFTER=$n "$bin" run slow.lua --out k -q --checkpoint-seconds 0 >/dev/null 2>&1
    rc=$?
    [ $rc -eq 137 ] && ok || bad "die-after $n: exit $rc, expected 137 (SIGKILL)"
    $h5 shape k/run.h5 >/dev/null 2>&1 && ok || bad "die-after $n: the killed run's file is not readable by h5py"
    check "resume-after-$n" 0 "$bin" resume k -q
    $h5 same ref/run.h5 k/run.h5 && ok || bad "die-after $n: resumed frames differ from the uninterrupted run"
done
for i in 1 2 3; do
    rm -rf r
    "$bin" run slow.lua --out r -q --checkpoint-seconds 0.02 >/dev/null 2>&1 &
    pid=$!
    # wall-clock kills cannot be replayed exactly; the delay and frames reached are printed
    # with any failure (the die-after kills above are the reproducible ones)
    delay=$($py -c "import random; print(round(random.uniform(0.05, 0.6), 3))")
    sleep "$delay"
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    at=$($h5 shape r/run.h5 2>/dev/null | head -c 40)
    if [ -e r/run.h5 ]; then
        $h5 shape r/run.h5 >/dev/null 2>&1 && ok || bad "random kill $i (after ${delay}s): the killed run's file is not readable by h5py"
    fi
    "$bin" run slow.lua --out r -q >/dev/null 2>&1 && ok || bad "random kill $i (after ${delay}s, frames $at): rerun did not complete"
    $h5 same ref/run.h5 r/run.h5 && ok || bad "random kill $i (after ${delay}s, frames $at): frames differ from the uninterrupted run"
done

# ---- SIGTERM: clean stop, status interrupted, resumable --------------------------------------
rm -rf s
"$bin" run slow.lua --out s -q >/dev/null 2>&1 &
pid=$!
sleep 0.3; kill -TERM $pid; wait $pid; rc=$?
[ $rc -eq 143 ] && ok || bad "sigterm: exit $rc, expected 143"
[ "$($h5 attr s/run.h5 status)" = interrupted ] && ok || bad "sigterm: status not interrupted"
[ -e s/state.h5 ] && ok || bad "sigterm: no state saved"
check sigterm-resume 0 "$bin" resume s -q
$h5 same ref/run.h5 s/run.h5 && ok || bad "sigterm: resumed frames differ"
check resume-complete 0 "$bin" resume s;  contains resume-complete-says "already complete"
rm -rf s
"$bin" run slow.lua --out s -q >/dev/null 2>&1 &
pid=$!
sleep 0.3; kill -INT $pid; wait $pid; rc=$?
[ $rc -eq 130 ] && ok || bad "sigint: exit $rc, expected 130"
[ "$($h5 attr s/run.h5 status)" = interrupted ] && ok || bad "sigint: status not interrupted"
check info-interrupted 0 "$bin" info s; contains info-resumable "(resumable)"
check sigint-rerun 0 "$bin" run slow.lua --out s -q
$h5 same ref/run.h5 s/run.h5 && ok || bad "sigint: frames after the rerun differ"
[ "$($h5 attr s/run.h5 resumed)" = 1 ] && ok || bad "sigint: resumed count not 1"

# ---- one process per run directory --------------------------------------------------------------
rm -rf two
"$bin" run slow.lua --out two -q >/dev/null 2>&1 &
pid=$!
sleep 0.3
check second-process 1 "$bin" run slow.lua --out two -q
contains second-process-says "another fifolab process is running this run"
check second-resume 1 "$bin" resume two -q
kill -TERM $pid; wait $pid
check after-lock-released 0 "$bin" resume two -q
$h5 same ref/run.h5 two/run.h5 && ok || bad "lock: frames after the resume differ"

# ---- h5py reads the run while it is written --------------------------------------------------
rm -rf w
"$bin" run slow.lua --out w -q >/dev/null 2>&1 &
pid=$!
seen=$($h5 grows w/run.h5 1.5); rc=$?
wait $pid
[ $rc -eq 0 ] && ok || bad "swmr: the reader did not see the frames grow (saw: $seen)"

# ---- a full disk (a file-size limit) fails cleanly; nothing written is lost -----------------
rm -rf f
ref_sum=$(cksum < ref/run.h5)
( ulimit -f 6000; exec "$bin" run slow.lua --out f -q --checkpoint-seconds 0 ) >f.log 2>&1
rc=$?
[ $rc -eq 1 ] && ok || bad "disk full: exit $rc, expected 1"
grep -q "f/run.h5" f.log && ok || bad "disk full: the message does not name the file: $(cat f.log)"
[ "$(cksum < ref/run.h5)" = "$ref_sum" ] && ok || bad "disk full: another run's file changed"
[ "$($h5 attr f/run.h5 status)" = failed ] && ok || bad "disk full: the stopped run's file is not readable with status failed"
n=$($h5 shape f/run.h5 | cut -d' ' -f1)
[ "${n:-0}" -gt 0 ] && [ "$n" -lt 1500 ] && ok || bad "disk full: expected some but not all frames kept, got '${n:-none}'"
check disk-full-resume 0 "$bin" resume f -q
$h5 same ref/run.h5 f/run.h5 && ok || bad "disk full: frames after resume differ"

# ---- online video: written while the run goes, whole again after a kill and resume ----------
if command -v ffprobe >/dev/null 2>&1; then
    rm -rf v
    FIFOLAB_TEST_DIE_AFTER=50 "$bin" run small.lua --out v -q --checkpoint-seconds 0 --set 'video={mp4=true, fps=12}' >/dev/null 2>&1
    check video-resume 0 "$bin" resume v -q
    n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames,r_frame_rate -of csv=p=0 v/video.mp4)
    [ "$n" = "12/1,96" ] && ok || bad "video: ffprobe says '$n', expected 12/1,96"
    [ -z "$(ls v | grep "\.tmp")" ] && ok || bad "video: temporary files left: $(ls v)"
    check video-no-ffmpeg 0 env FIFOLAB_FFMPEG=/nonexistent/ffmpeg "$bin" run small.lua --out vn -q --set 'video={mp4=true}'
    contains video-no-ffmpeg-warns "warning: no video"
    [ "$($h5 attr vn/run.h5 status)" = complete ] && ok || bad "video: no ffmpeg, and the run did not complete"
else
    echo "(ffprobe not found: online video not tested)"
fi

# ---- sweeps: plan, run, skip, --index, summarize, MPI ----------------------------------------
cat >sweep.lua <<'LUA'
local fl = require "fifolab"
local base = fl.include "small.lua"
base.frames = 48
return fl.sweep {
  name = "grid", base = base,
  grid = { { "scheduler.planner.partitions", {1, 2} }, { "scheduler.planner", {"partition", "lookahead"} } },
  seeds = {1, 2},
}
LUA
check plan 0 "$bin" plan sweep.lua --out sw;  contains plan-count "8 points"
check plan-n 0 "$bin" plan sweep.lua --count; [ "$out" = 8 ] && ok || bad "plan --count: $out"
check index 0 "$bin" run sweep.lua --out one -q --index 3
[ "$(find one -name run.h5 | wc -l)" -eq 1 ] && ok || bad "--index: not exactly one run"
check index-range 2 "$bin" run sweep.lua --out one -q --index 8
check sweep 0 "$bin" run sweep.lua --out sw -q
[ "$(find sw -name run.h5 | wc -l)" -eq 8 ] && ok || bad "sweep: not 8 runs"
# the included script is recorded beside the main one, verbatim, and kept by a resume
one=$(find sw -name run.h5 | head -n 1)
$h5 include "$one" 0 small.lua && ok || bad "sweep: /config/includes/0 is not small.lua verbatim"
rm -rf inc && FIFOLAB_TEST_DIE_AFTER=5 "$bin" run sweep.lua --out inc -q --index 0 --checkpoint-seconds 0 >/dev/null 2>&1
check include-resume 0 "$bin" resume "$(dirname "$(find inc -name run.h5 | head -n 1)")" -q
$h5 include "$(find inc -name run.h5 | head -n 1)" 0 small.lua && ok || bad "resume: /config/includes/0 lost"
check sweep-skip 0 "$bin" run sweep.lua --out sw; contains sweep-skips "0 run, 8 skipped"
check summarize 0 "$bin" summarize sw
contains summarize-key "scheduler.planner.partitions"; contains summarize-oracle "oracle"; contains summarize-pm "±"
check summarize-csv 0 "$bin" summarize sw --csv; contains summarize-csv-head "runs,emitted,emitted_std"
if command -v mpirun >/dev/null 2>&1; then
    # OpenMPI's own allocations outlive MPI_Finalize: no leak report for them (ASan build)
    check mpi 0 env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
        mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" run sweep.lua --out mp -q
    [ "$(find mp -name run.h5 | wc -l)" -eq 8 ] && ok || bad "mpi: not 8 runs"
    for d in sw/grid/*; do
        $h5 same "$d/run.h5" "mp/grid/$(basename "$d")/run.h5" >/dev/null && ok || bad "mpi: $d differs from the serial sweep"
    done
else
    echo "(mpirun not found: MPI sweep not tested)"
fi

finish runs
