/* Clip datasets: videos of RGB frames with a caption per frame, cut into f-frame clips,
 * held in memory and stored as HDF5 (layout in docs/data.md). */
#ifndef FL_CLIPS_H
#define FL_CLIPS_H

#include <stdint.h>

#include "core/status.h"

#define FL_CLIPS_FORMAT "fifolab-clips"
#define FL_CLIPS_FORMAT_VERSION 1
/* Limits the reader enforces on a file's dimensions (a malformed file must not make it
 * allocate without bound). */
#define FL_CLIPS_MAX_SIDE 4096
#define FL_CLIPS_MAX_WINDOW 4096
#define FL_CLIPS_MAX_CAPTION 1024

/* A clip dataset. Every array is owned by the struct (malloc'd) and freed by
 * fl_clips_free. Frames are stored as an image library would: [T, H, W, 3] uint8 RGB, row
 * major; frames of one video are consecutive. Clip i is frames
 * clip_first[i] .. clip_first[i] + window - 1, which lie inside one video. */
typedef struct fl_clips {
    int window;             /* f: frames per clip */
    int height, width;      /* H, W; 3 channels */
    int64_t nframes;        /* T */
    uint8_t *frames;        /* [T, H, W, 3] */
    int32_t *frame_caption; /* [T] caption id of each frame, in 0 .. ncaptions - 1 */
    int64_t nvideos;        /* V */
    int64_t *video_first;   /* [V] first frame of each video */
    int64_t *video_len;     /* [V] its frame count */
    int64_t nclips;         /* N */
    int64_t *clip_first;    /* [N] */
    int32_t *clip_caption;  /* [N] caption of the clip's frame window / 2 */
    int ncaptions;          /* K */
    char **captions;        /* [K] NUL-terminated UTF-8 texts */
    uint64_t seed;          /* the generator's seed (0: unknown) */
    char *generator;        /* how it was made: "procgen videos=24 ..." (may be NULL) */
} fl_clips;

/* A dataset with every array allocated (frames and ids zeroed, captions NULL) for the
 * given sizes; the caller fills it. *out is NULL on failure. */
fl_status fl_clips_alloc(int window, int height, int width, int64_t nframes, int64_t nvideos,
                         int64_t nclips, int ncaptions, fl_clips **out, fl_error *err);
void fl_clips_free(fl_clips *c); /* c may be NULL */

/* Checks every index (captions in range, videos tiling the frames, clips inside one
 * video) and that every caption is set; FL_E_FORMAT naming the array and entry at fault
 * ("clip_first[12]: clip 12 runs past the end of video 0 (frames 0..159)"). */
fl_status fl_clips_check(const fl_clips *c, fl_error *err);

/* Fills clip_first / clip_caption with one clip at every offset of every video (a video
 * shorter than the window gives none): the clip table must have been allocated with
 * fl_clips_count_offsets(c) entries. */
int64_t fl_clips_count_offsets(const fl_clips *c);
void fl_clips_fill_offsets(fl_clips *c);

/* Writes c to a new HDF5 file `path` (replaced if it exists), through path.tmp and a
 * rename so a reader never sees half a file. Errors name the file. */
fl_status fl_clips_write(const fl_clips *c, const char *path, fl_error *err);
/* Reads a dataset written by fl_clips_write (or by anyone following docs/data.md) and
 * checks it with fl_clips_check; errors name the file and the object at fault. */
fl_status fl_clips_read(const char *path, fl_clips **out, fl_error *err);

/* The id of the caption with exactly this text, or -1. */
int32_t fl_clips_find_caption(const fl_clips *c, const char *text);

#endif
