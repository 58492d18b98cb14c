/* Video output: RGB frames piped, as they come, to Debian's `ffmpeg` program (one child
 * process per output, fork/exec without a shell), so memory stays constant however long
 * the video. MP4 (H.264, yuv420p), GIF (a palette per frame) and PNG frames. Formats,
 * sizes and the FIFOLAB_FFMPEG variable: docs/video.md. */
#ifndef FL_VIDEO_H
#define FL_VIDEO_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "data/colour.h"

/* Where and how to write. Paths are copied by fl_video_open; NULL (or "") means no such
 * output, and at least one output is needed. */
typedef struct fl_video_opts {
    const char *mp4;     /* H.264 in MP4 (written as MP4 whatever the file's extension) */
    const char *gif;     /* animated GIF, looping forever */
    const char *png_dir; /* PNG frames png_dir/frame_000000.png, ... (frame index from 0);
                            the directory is created, existing frames are overwritten */
    int fps;             /* frames per second, 1..240 (0: FL_VIDEO_DEFAULT_FPS) */
    int scale;           /* integer nearest-neighbour upscale, 1..64 (0: 1) */
} fl_video_opts;

#define FL_VIDEO_DEFAULT_FPS 8

typedef struct fl_video fl_video;

/* The ffmpeg program that will run: $FIFOLAB_FFMPEG when set and not empty (a path, or a
 * name looked up in $PATH), else "ffmpeg" in $PATH. Its path goes to buf. FL_E_UNSUPPORTED
 * when there is none, with the message "ffmpeg not found: install Debian's ffmpeg package
 * (apt-get install ffmpeg)" (or one naming FIFOLAB_FFMPEG's value): a run can check this
 * before it starts and warn that it will make no video. */
fl_status fl_video_find_ffmpeg(char *buf, size_t size, fl_error *err);

/* Starts one ffmpeg per output for frames of height x width (before scaling). Checks the
 * output places first (the directory exists and is writable, the path is not a
 * directory). Errors: FL_E_UNSUPPORTED (no ffmpeg; see fl_video_find_ffmpeg), FL_E_INVALID
 * (options), FL_E_IO (an output path, a process that cannot start). On error nothing is
 * left running and *out is NULL. The caller owns *out: end it with fl_video_close (or
 * fl_video_discard). Not thread-safe: one thread uses one writer. */
fl_status fl_video_open(fl_video **out, const fl_video_opts *o, int height, int width,
                        fl_error *err);

/* One frame, RGB bytes [height, width, 3] (row-major, as fl_colour_frame writes them).
 * Blocks while ffmpeg is busy (a pipe's worth of frames is buffered). SIGPIPE is blocked
 * in the calling thread around the write, so an ffmpeg that died is an error here
 * (FL_E_IO naming the output, with ffmpeg's exit status and the last lines of its error
 * output), never a signal. After an error every later call returns it again; the caller
 * should fl_video_discard the writer (a run goes on without its video). */
fl_status fl_video_frame(fl_video *v, const uint8_t *rgb, fl_error *err);

/* One float frame [channels, height, width] mapped by fl_colour_frame in `space` (the
 * writer keeps the RGB buffer): what a run's frame sink calls with each emitted latent. */
fl_status fl_video_frame_f32(fl_video *v, const float *frame, int channels,
                             fl_colour_space space, fl_error *err);

/* Frames written so far. */
int64_t fl_video_frames(const fl_video *v);

/* Ends every output: closes ffmpeg's input, waits for it to finish the file and checks
 * its exit status (FL_E_IO naming the output and giving ffmpeg's last error lines when it
 * failed). A video of zero frames is an error (ffmpeg writes no file). Frees v, also on
 * error; v may be NULL. */
fl_status fl_video_close(fl_video *v, fl_error *err);

/* Abandons the outputs: stops the ffmpeg processes (SIGTERM), waits for them and frees
 * v. Files may be left partial; the caller removes them if it wants. v may be NULL. */
void fl_video_discard(fl_video *v);

#endif
