#!/bin/sh
# End-to-end checks of bringing your own videos (issue 6, data/video_read.h): `fifolab data
# import` of a video made by ffmpeg itself (frame count, shape, captions, clips; frames equal
# to ffmpeg's own decode of the file), --every / --max-frames / --caption, the errors (missing
# file, not a video, no ffmpeg, bad usage), and scheduler.source = { video = FILE } continuing
# a video file (a lossless copy of a dataset video continues exactly like the dataset video).
# Python checks use Debian's python3-h5py and numpy.
# Usage: tests/import.sh [PATH/TO/fifolab]   (default: $FL_CLI_BIN, else ./fifolab)
set -u
. "$(dirname "$0")/lib.sh"
px="$py $here/pixels.py"

if ! command -v ffmpeg >/dev/null 2>&1; then
    # without ffmpeg only the error can be checked
    check no-ffmpeg 1 "$bin" data import x.mp4 --out d.h5
    contains no-ffmpeg-says "ffmpeg not found"
    echo "(ffmpeg not found: import not checked)"
    echo "import: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
fi

# ---- a video of 40 frames (64 x 64, H.264 in MP4) imported at 32 x 32 --------------------------
ffmpeg -v error -f lavfi -i testsrc=size=64x64:rate=8 -frames:v 40 -pix_fmt yuv420p -c:v libx264 x.mp4 ||
    bad "ffmpeg could not make the test video"
check import 0 "$bin" data import x.mp4 --out d/x.h5 --size 32x32 --window 8
contains import-says "1 videos, 40 frames of 32x32 RGB, 33 clips of 8 frames"
check info 0 "$bin" data info d/x.h5
contains info-caption "40  x"
# Frames against ffmpeg's own decode of the file through the same scaler (area averaging to
# 32 x 32, RGB): equal (a different scaler would be within a few levels, not equal).
cat >same.py <<'PY'
import subprocess, sys
import h5py, numpy as np
path, video, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
every, count, caption, window = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], int(sys.argv[8])
cmd = ["ffmpeg", "-v", "error", "-i", video]
if h:
    cmd += ["-vf", "scale=%d:%d:flags=area" % (w, h)]
raw = subprocess.run(cmd + ["-pix_fmt", "rgb24", "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
ref = np.frombuffer(raw, np.uint8).reshape(-1, h or 64, w or 64, 3)[::every][:count]
with h5py.File(path, "r") as f:
    fr = f["frames"][()]
    caps = [c.decode() if isinstance(c, bytes) else c for c in f["captions"][()]]
    msg = []
    if fr.shape != ref.shape:
        msg.append("frames %s, ffmpeg decodes %s" % (fr.shape, ref.shape))
    elif (np.abs(fr.astype(int) - ref) > 0).any():
        msg.append("frames differ from ffmpeg's decode by up to %d" % np.abs(fr.astype(int) - ref).max())
    if caps != [caption] or set(f["frame_caption"][()]) != {0}:
        msg.append("captions %s, expected [%s]" % (caps, caption))
    if int(f.attrs["window"]) != window or list(f["video_len"][()]) != [count] \
            or list(f["clip_first"][()]) != list(range(count - window + 1)):
        msg.append("window/videos/clips: %s %s %s" % (f.attrs["window"], f["video_len"][()], f["clip_first"][()]))
print("; ".join(msg))
sys.exit(1 if msg else 0)
PY
check frames-match 0 $py same.py d/x.h5 x.mp4 32 32 1 40 x 8
# the files' own size, every 3rd frame, at most 10, a caption
check import-opts 0 "$bin" data import x.mp4 --out o.h5 --every 3 --max-frames 10 --window 4 --caption "a test card"
contains import-opts-says "10 frames of 64x64 RGB, 7 clips of 4 frames"
check opts-match 0 $py same.py o.h5 x.mp4 0 0 3 10 "a test card" 4
# two files: one video each, a caption each
cp x.mp4 y.mp4
check import-two 0 "$bin" data import x.mp4 y.mp4 --out two.h5 --size 16x24 --window 8 --caption one --caption two
contains import-two-says "2 videos, 80 frames of 16x24 RGB, 66 clips of 8 frames, 2 captions"
check two-info 0 "$bin" data info two.h5
contains two-info-one "40  one"; contains two-info-two "40  two"

# ---- errors name the file --------------------------------------------------------------------
check missing 1 "$bin" data import nope.mp4 --out e.h5
contains missing-says "nope.mp4: No such file or directory"
echo "not a video" >notes.txt
check not-video 1 "$bin" data import notes.txt --out e.h5
contains not-video-says "notes.txt: not a video ffmpeg can read"
contains not-video-ffmpeg "Invalid data found"
check no-ffmpeg 1 env FIFOLAB_FFMPEG=/nonexistent "$bin" data import x.mp4 --out e.h5
contains no-ffmpeg-says "ffmpeg not found: FIFOLAB_FFMPEG=/nonexistent is not an executable file"
check short 1 "$bin" data import x.mp4 --out e.h5 --window 50
contains short-warns "x.mp4: 40 frames, fewer than the window (50)"
contains short-says "no clips to write"
check sizes-differ 1 "$bin" data import x.mp4 o.h5 --out e.h5
[ ! -e e.h5 ] && ok || bad "a failed import left e.h5"
check no-out 2 "$bin" data import x.mp4
check no-files 2 "$bin" data import --out e.h5
check bad-size 2 "$bin" data import x.mp4 --out e.h5 --size 0x3
check bad-option 2 "$bin" data import x.mp4 --out e.h5 --fps 3
check captions-count 2 "$bin" data import x.mp4 y.mp4 x.mp4 --out e.h5 --caption a --caption b
check help 0 "$bin" data import --help
contains help-says "fifolab data import VIDEO... --out FILE"

# ---- continuing a video file: scheduler.source = { video = FILE } ------------------------------
# Video 3 of a procedural dataset, frames 0..29, written losslessly (PNG in Matroska): a run
# continuing the file must emit exactly what the run continuing the dataset video does, and
# continue it (small distance to the video's own frames 30..37).
check data 0 "$bin" data make --out d.h5 --window 8 --videos 16 --frames 64 --colors 4 --segment 16
$py -c '
import sys, h5py
with h5py.File("d.h5", "r") as f:
    a = int(f["video_first"][3])
    sys.stdout.buffer.write(f["frames"][a:a + 30].tobytes())
' | ffmpeg -v error -f rawvideo -pix_fmt rgb24 -video_size 32x32 -framerate 8 -i - -c:v png v3.mkv ||
    bad "ffmpeg could not write v3.mkv"
cat >ext.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "ext", seed = 4, frames = 24,
  model = fl.model.empirical { dataset = "d.h5" },
  sampler = fl.sampler.ddim { eta = 1.0 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = "frames",
                                  source = { video = "v3.mkv" } },
}
LUA
check ext-video 0 "$bin" run ext.lua --out ev -q
check ext-clips 0 "$bin" run ext.lua --out ec -q --set 'scheduler.source={clips="d.h5",video=3,last=29}'
check ext-same 0 $h5 same ev/run.h5 ec/run.h5
check ext-continues 0 $px continues ev/run.h5 d.h5 3 29 8
echo "extension of v3.mkv (video 3, frames 0..29): RMS to its frames 30..37, to the nearest other video: $out"
$py -c '
import sys, h5py
with h5py.File("ev/run.h5", "r") as f:
    r = f["config/resolved"][()]
sys.exit(0 if b"v3.mkv" in (r if isinstance(r, bytes) else r.encode()) else 1)' && ok ||
    bad "ext: the run file does not record its source v3.mkv"
# last = K, an MP4 at another size (scaled to the model's 32 x 32), and the errors
check ext-last 0 "$bin" run ext.lua --out el -q --set scheduler.source.last=25
check ext-mp4 0 "$bin" run ext.lua --out em -q --set 'scheduler.source={video="x.mp4"}'
check ext-short 2 "$bin" run ext.lua --out es -q --set scheduler.source.last=10
contains ext-short-says "v3.mkv (frames 0..10) gives 11 frames, the queue needs 20"
check ext-last-range 2 "$bin" run ext.lua --out es -q --set scheduler.source.last=40
contains ext-last-range-says "frame 40, but v3.mkv has 30 frames"
check ext-missing 2 "$bin" run ext.lua --out es -q --set 'scheduler.source={video="nope.mp4"}'
contains ext-missing-says "scheduler.source: video: nope.mp4: No such file or directory"
check ext-not-video 2 "$bin" run ext.lua --out es -q --set 'scheduler.source={video="notes.txt"}'
contains ext-not-video-says "notes.txt: not a video ffmpeg can read"
check ext-no-ffmpeg 2 env FIFOLAB_FFMPEG=/nonexistent "$bin" run ext.lua --out es -q
contains ext-no-ffmpeg-says "ffmpeg not found"
check ext-two-sources 2 "$bin" run ext.lua --out es -q --set 'scheduler.source={video="v3.mkv",run="ev/run.h5"}'
contains ext-two-says "needs the video to continue"

finish import
