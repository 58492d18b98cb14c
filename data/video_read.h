/* Video input: the frames of an ordinary video file (anything Debian's `ffmpeg` decodes),
 * one by one as RGB bytes, scaled to a requested size or at the file's own, from one ffmpeg
 * child process (fork/exec without a shell, FIFOLAB_FFMPEG as for the writer), in constant
 * memory however long the video. See docs/data.md "Bringing your own videos". */
#ifndef FL_VIDEO_READ_H
#define FL_VIDEO_READ_H

#include <stdint.h>

#include "core/status.h"

/* Largest frame side accepted (requested or the file's). */
#define FL_VIDEO_READ_MAX_SIDE 16384

typedef struct fl_video_read_opts {
    const char *scale_flags; /* ffmpeg's scaler flags when resizing: NULL or "" is "area"
                                (area averaging: no aliasing when shrinking) */
    int64_t max_frames;      /* stop after this many frames (0: every frame of the file) */
} fl_video_read_opts;

typedef struct fl_video_reader fl_video_reader;

/* Starts decoding `path`: its first video stream, every frame it holds (no frames are
 * dropped or repeated to a frame rate), converted to RGB and scaled to height x width
 * (the aspect ratio is not kept), or at the file's own size when both are 0. Waits for
 * the first frame, so a file that is missing, not a video or holds no frames fails here:
 * FL_E_IO naming the file, with ffmpeg's last error lines; FL_E_UNSUPPORTED when there is
 * no ffmpeg (the writer's message, data/ffmpeg.h); FL_E_INVALID for sizes or options.
 * opts may be NULL. On error nothing is left running and *out is NULL. The caller ends
 * the reader with fl_video_reader_close. Not thread-safe: one thread uses one reader. */
fl_status fl_video_reader_open(const char *path, int height, int width, const fl_video_read_opts *opts,
                               fl_video_reader **out, fl_error *err);

/* The frame size: the requested one, or the file's own when 0 x 0 was asked for. */
void fl_video_reader_size(const fl_video_reader *r, int *height, int *width);

/* The next frame into rgb ([height, width, 3] bytes, row-major, as fl_video_frame takes
 * them). Returns 1 with a frame, 0 at the end of the video (every frame read and ffmpeg
 * exited cleanly; later calls return 0 again), or a negative fl_status with err set:
 * FL_E_IO naming the file when ffmpeg fails part way (its exit status and last error
 * lines) or its output is cut short, FL_E_FORMAT when it is not what was asked for. After
 * an error every later call returns it again. */
int fl_video_reader_frame(fl_video_reader *r, uint8_t *rgb, fl_error *err);

/* Frames returned so far. */
int64_t fl_video_reader_frames(const fl_video_reader *r);

/* Stops ffmpeg if it is still decoding (SIGTERM: a reader may stop early), waits for it
 * and frees r. r may be NULL. */
void fl_video_reader_close(fl_video_reader *r);

#endif
