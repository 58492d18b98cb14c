#!/bin/sh
# End-to-end checks of video output: `fifolab export` of small runs to MP4, GIF and PNG
# frames, read back with ffprobe (frame count, size, fps, even-size padding), exporting a
# run while it is written, and the errors: ffmpeg missing, ffmpeg failing (FIFOLAB_FFMPEG),
# a bad output path, bad usage.
# Usage: tests/video.sh [PATH/TO/fifolab]   (default: $FL_CLI_BIN, else ./fifolab)
set -u
. "$(dirname "$0")/lib.sh"
# width,height,fps,frames of a video's first stream (frames counted by decoding them all)
probe() { ffprobe -v error -select_streams v:0 -count_frames \
          -show_entries stream=width,height,r_frame_rate,nb_read_frames -of csv=p=0 "$1" 2>&1; }
expect_probe() { # name, file, expected "w,h,fps/1,frames"
    got=$(probe "$2")
    [ "$got" = "$3" ] && ok || bad "$1: ffprobe says '$got', expected '$3'"
}

# 40 frames of 3 x 8 x 8 latents; 24 frames of 2 x 7 x 9 (odd sides); a slow one.
cat >small.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "small", seed = 3, frames = 40,
  model = fl.model.gauss { window = 4, channels = 3, size = {8, 8}, rho = 0.9 },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 } },
}
LUA
cat >odd.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "odd", seed = 1, frames = 24,
  model = fl.model.gauss { window = 4, channels = 2, size = {7, 9}, rho = 0.9 },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 } },
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
check run-small 0 "$bin" run small.lua --out a -q
check run-odd 0 "$bin" run odd.lua --out o -q

if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
    # ---- MP4, GIF, PNG: count, size, fps ----------------------------------------------------
    check export 0 "$bin" export a --mp4 a.mp4 --gif a.gif --png pngs --fps 10 --scale 4
    contains export-says "40 frames"
    expect_probe mp4 a.mp4 "32,32,10/1,40"
    expect_probe gif a.gif "32,32,10/1,40"
    [ "$(ls pngs | grep -c '^frame_[0-9]\{6\}\.png$')" -eq 40 ] && ok || bad "png: not 40 frames in pngs/"
    [ -s pngs/frame_000000.png ] && [ -s pngs/frame_000039.png ] && ok || bad "png: frames not numbered 0..39"
    expect_probe png pngs/frame_000039.png "32,32,25/1,1"
    [ "$(head -c 6 a.gif)" = GIF89a ] && ok || bad "gif: not a GIF89a file"
    # the run file given directly, and an extension that is not .mp4
    check export-file 0 "$bin" export a/run.h5 --mp4 a.video --fps 24 --scale 1
    expect_probe mp4-any-name a.video "8,8,24/1,40"
    # defaults: 8 fps, scale up to a longer side of at least 256 pixels (8 x 32)
    check export-defaults 0 "$bin" export a --mp4 d.mp4
    expect_probe defaults d.mp4 "256,256,8/1,40"
    # odd sides: yuv420p wants even ones, so 9 x 7 is padded to 10 x 8; scaled x3 to 28 x 22
    check export-odd 0 "$bin" export o --mp4 o.mp4 --scale 1 --fps 6
    expect_probe odd-padded o.mp4 "10,8,6/1,24"
    check export-odd-gif 0 "$bin" export o --gif o.gif --scale 3
    expect_probe odd-gif o.gif "27,21,8/1,24"
    check export-odd-mp4-x3 0 "$bin" export o --mp4 o3.mp4 --scale 3
    expect_probe odd-x3 o3.mp4 "28,22,8/1,24"
    # ---- a run being written: the frames present when the export starts ----------------------
    "$bin" run slow.lua --out w -q >/dev/null 2>&1 &
    pid=$!
    n=0; i=0
    while [ $i -lt 100 ]; do
        sleep 0.1; i=$((i + 1))
        [ -e w/run.h5 ] || continue
        out=$("$bin" export w --mp4 w.mp4 --scale 2 2>&1) && break
    done
    kill $pid 2>/dev/null; wait $pid 2>/dev/null
    n=$(echo "$out" | sed -n 's/.*: \([0-9]*\) frames (.*/\1/p')
    if [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$n" -le 1500 ]; then
        ok
        expect_probe while-written w.mp4 "32,32,8/1,$n"
    else
        bad "while-written: no export of the running run: $out"
    fi
    # ---- ffmpeg failing: its exit status and last error line, the output named ---------------
    printf '#!/bin/sh\necho "Unknown encoder libx264" >&2\nexit 1\n' >fakeff; chmod +x fakeff
    check ffmpeg-fails 1 env FIFOLAB_FFMPEG="$t/fakeff" "$bin" export a --mp4 f.mp4
    contains ffmpeg-fails-status "exit status 1"
    contains ffmpeg-fails-stderr "Unknown encoder libx264"
    contains ffmpeg-fails-named "f.mp4"
    # a bad output: the directory does not exist; an output that is a directory
    check bad-output 1 "$bin" export a --mp4 /nonexistent/dir/x.mp4
    contains bad-output-named "/nonexistent/dir/x.mp4"
    check output-is-dir 1 "$bin" export a --gif pngs
    contains output-is-dir-says "is a directory"
    check png-under-file 1 "$bin" export a --png a.mp4/frames
    contains png-under-file-named "a.mp4"
else
    echo "(ffmpeg/ffprobe not installed: exports not tested; scripts/setup.sh installs them)"
fi

# ---- ffmpeg missing ---------------------------------------------------------------------------
check no-ffmpeg 1 env PATH="$t/empty" "$bin" export a --mp4 n.mp4
contains no-ffmpeg-says "ffmpeg not found: install Debian's ffmpeg package (apt-get install ffmpeg)"
[ ! -e n.mp4 ] && ok || bad "no-ffmpeg: an output file was left"
check no-ffmpeg-env 1 env FIFOLAB_FFMPEG=/nonexistent/ffmpeg "$bin" export a --mp4 n.mp4
contains no-ffmpeg-env-says "FIFOLAB_FFMPEG=/nonexistent/ffmpeg"

# ---- the run file and usage -------------------------------------------------------------------
check missing-run 1 "$bin" export nope --mp4 x.mp4;   contains missing-run-named "nope"
echo "not hdf5" >junk.h5
check junk-run 1 "$bin" export junk.h5 --mp4 x.mp4;   contains junk-run-named "junk.h5"
check pixels-2ch 1 "$bin" export o --mp4 x.mp4 --space pixels; contains pixels-2ch-says "1 or 3 channels"
check help 0 "$bin" export --help;                     contains help-says "--scale K"
check no-output 2 "$bin" export a;                     contains no-output-says "no output"
check no-run 2 "$bin" export --mp4 x.mp4
check bad-fps 2 "$bin" export a --mp4 x.mp4 --fps 0;   contains bad-fps-says "--fps"
check bad-scale 2 "$bin" export a --mp4 x.mp4 --scale x
check bad-space 2 "$bin" export a --mp4 x.mp4 --space rgb
check unknown-opt 2 "$bin" export a --mp4 x.mp4 --bogus
check two-runs 2 "$bin" export a o --mp4 x.mp4
check no-value 2 "$bin" export a --mp4
check listed 0 "$bin" --help;                          contains listed-export "export"

finish video
