/* Reading the frames of a video file through an ffmpeg child process (data/video_read.h). */
#include "data/video_read.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/ffmpeg.h"

#define MAX_ARGS 40
#define BUF_BYTES 65536

/* ffmpeg writes PPM images ("P6\n<w> <h>\n255\n" + RGB bytes) back to back rather than
 * raw frames: each frame then says its own size, so the file's size needs no second
 * program (ffprobe) or parsing of ffmpeg's log, and a size that changes part way is
 * caught instead of silently shearing every later frame. */
struct fl_video_reader {
    char prog[FL_FFMPEG_PATH_MAX];
    char *path;
    fl_ffmpeg_proc p;
    int height, width;  /* the frames' size (requested, or the first frame's) */
    int64_t max_frames; /* 0: all */
    int64_t frames;     /* returned so far */
    int pending;        /* the first frame's header is read (by open), its pixels are not */
    int ended;          /* the end was seen and ffmpeg exited cleanly */
    fl_error failed;    /* sticky */
    size_t pos, len;    /* unread bytes: buf[pos .. len) */
    uint8_t buf[BUF_BYTES];
};

/* ---- buffered reading of ffmpeg's output ------------------------------------------------ */

/* Refills the buffer: > 0 bytes there, 0 at the end of ffmpeg's output, -errno. */
static ssize_t fill(fl_video_reader *r)
{
    if (r->pos < r->len)
        return (ssize_t)(r->len - r->pos);
    ssize_t n;
    while ((n = read(r->p.fd, r->buf, sizeof r->buf)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -errno;
    r->pos = 0;
    r->len = (size_t)n;
    return n;
}

/* One byte: 0..255, -1 at the end, -2 - errno on a read error. */
static int next_byte(fl_video_reader *r)
{
    ssize_t n = fill(r);
    if (n <= 0)
        return n == 0 ? -1 : (int)(-2 + n);
    return r->buf[r->pos++];
}

/* n bytes into dst; the count actually read (short at the end), or -errno. */
static ssize_t read_bytes(fl_video_reader *r, uint8_t *dst, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t m = fill(r);
        if (m < 0)
            return m;
        if (m == 0)
            break;
        size_t k = (size_t)m < n - got ? (size_t)m : n - got;
        memcpy(dst + got, r->buf + r->pos, k);
        r->pos += k;
        got += k;
    }
    return (ssize_t)got;
}

/* ---- errors --------------------------------------------------------------------------- */

static int fail(fl_video_reader *r, fl_error *err)
{
    if (err)
        *err = r->failed;
    return r->failed.code;
}

/* ffmpeg's output ended or went wrong: its exit status and last error lines tell why. */
static int ffmpeg_failed(fl_video_reader *r, const char *what_happened, fl_error *err)
{
    if (r->p.fd >= 0) {
        close(r->p.fd); /* a still running ffmpeg gets EPIPE and stops */
        r->p.fd = -1;
    }
    fl_ffmpeg_failure(&r->p, r->prog, what_happened, &r->failed);
    return fail(r, err);
}

static int bad_output(fl_video_reader *r, const char *why, fl_error *err)
{
    char what[160];
    snprintf(what, sizeof what, " wrote %s at frame %lld", why, (long long)r->frames);
    fl_ffmpeg_release(&r->p);
    fl_error_set(&r->failed, FL_E_FORMAT, "%s (video): ffmpeg (%s)%s", r->path, r->prog, what);
    return fail(r, err);
}

/* ---- PPM headers ------------------------------------------------------------------------ */

/* A decimal number of a PPM header after whitespace (and # comments); -1 when none. */
static long header_number(fl_video_reader *r)
{
    int c = next_byte(r);
    for (;;) {
        if (c == '#')
            while (c >= 0 && c != '\n')
                c = next_byte(r);
        else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            c = next_byte(r);
        else
            break;
    }
    if (c < '0' || c > '9')
        return -1;
    long v = 0;
    while (c >= '0' && c <= '9') {
        if (v > 1000000)
            return -1;
        v = v * 10 + (c - '0');
        c = next_byte(r);
    }
    /* exactly one whitespace byte ends the number (after maxval the pixels start) */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' ? v : -1;
}

/* The next frame's header: 1 read (size checked), 0 at the end of the output (between
 * frames), or an error status (recorded). */
static int read_header(fl_video_reader *r, fl_error *err)
{
    int c = next_byte(r);
    if (c == -1)
        return 0;
    if (c < -1) {
        char what[96];
        snprintf(what, sizeof what, " could not be read at frame %lld (%s)", (long long)r->frames,
                 strerror(-(c + 2)));
        return ffmpeg_failed(r, what, err);
    }
    if (c != 'P' || next_byte(r) != '6')
        return bad_output(r, "something other than a PPM image", err);
    long w = header_number(r), h = header_number(r), maxval = header_number(r);
    if (w < 1 || h < 1 || maxval != 255)
        return bad_output(r, "a malformed PPM header", err);
    if (w > FL_VIDEO_READ_MAX_SIDE || h > FL_VIDEO_READ_MAX_SIDE) {
        char why[96];
        snprintf(why, sizeof why, "a frame of %ldx%ld (sides up to %d are read)", h, w, FL_VIDEO_READ_MAX_SIDE);
        return bad_output(r, why, err);
    }
    if (!r->height) {
        r->height = (int)h;
        r->width = (int)w;
    } else if (h != r->height || w != r->width) {
        char why[96];
        snprintf(why, sizeof why, "a frame of %ldx%ld after frames of %dx%d", h, w, r->height, r->width);
        return bad_output(r, why, err);
    }
    return 1;
}

/* ---- the reader ------------------------------------------------------------------------- */

void fl_video_reader_close(fl_video_reader *r)
{
    if (!r)
        return;
    fl_ffmpeg_release(&r->p);
    free(r->path);
    free(r);
}

fl_status fl_video_reader_open(const char *path, int height, int width, const fl_video_read_opts *opts,
                               fl_video_reader **out, fl_error *err)
{
    *out = NULL;
    const char *flags = opts && opts->scale_flags && *opts->scale_flags ? opts->scale_flags : "area";
    int64_t max_frames = opts ? opts->max_frames : 0;
    if (!path || !*path)
        return fl_error_set(err, FL_E_INVALID, "video reader: no file name");
    if ((height == 0) != (width == 0) || height < 0 || width < 0 || height > FL_VIDEO_READ_MAX_SIDE ||
        width > FL_VIDEO_READ_MAX_SIDE)
        return fl_error_set(err, FL_E_INVALID, "%s: frame size %dx%d: each side must be 1..%d (or both 0: the "
                            "file's own size)", path, height, width, FL_VIDEO_READ_MAX_SIDE);
    if (max_frames < 0)
        return fl_error_set(err, FL_E_INVALID, "%s: max_frames %lld is negative", path, (long long)max_frames);
    if (strspn(flags, "abcdefghijklmnopqrstuvwxyz_+") != strlen(flags))
        return fl_error_set(err, FL_E_INVALID, "%s: scaler flags '%s': expected words like area or bicubic", path,
                            flags);
    /* plain errors for the common mistakes, before ffmpeg words them its own way */
    struct stat sb;
    if (stat(path, &sb))
        return fl_error_set(err, FL_E_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return fl_error_set(err, FL_E_IO, "%s: is a directory, not a video file", path);
    if (access(path, R_OK))
        return fl_error_set(err, FL_E_IO, "%s: %s", path, strerror(errno));
    fl_video_reader *r = calloc(1, sizeof *r);
    size_t plen = strlen(path);
    if (!r || !(r->path = malloc(plen + 1))) {
        free(r);
        return fl_error_set(err, FL_E_NOMEM, "%s: video reader", path);
    }
    memcpy(r->path, path, plen + 1);
    fl_ffmpeg_init(&r->p, "video", r->path);
    r->height = height;
    r->width = width;
    r->max_frames = max_frames;
    fl_error_clear(&r->failed);
    fl_status st = fl_ffmpeg_find(r->prog, sizeof r->prog, err);
    if (st) {
        fl_video_reader_close(r);
        return st;
    }
    /* "file:" keeps ffmpeg from reading a protocol into a name with a colon (and a name
     * starting with '-' from being an option). */
    char input[FL_FFMPEG_PATH_MAX + 8], filter[160], nframes[32];
    if (snprintf(input, sizeof input, "file:%s", path) >= (int)sizeof input) {
        fl_video_reader_close(r);
        return fl_error_set(err, FL_E_INVALID, "%s: path too long", path);
    }
    snprintf(filter, sizeof filter, "scale=%d:%d:flags=%s", width, height, flags);
    snprintf(nframes, sizeof nframes, "%lld", (long long)max_frames);
    char *argv[MAX_ARGS];
    int n = 0;
    /* execv's prototype takes char *const[]; the strings are not written */
    argv[n++] = r->prog;
    argv[n++] = (char *)"-hide_banner";
    argv[n++] = (char *)"-nostdin";
    argv[n++] = (char *)"-nostats";
    argv[n++] = (char *)"-loglevel";
    argv[n++] = (char *)"error";
    argv[n++] = (char *)"-i";
    argv[n++] = input;
    argv[n++] = (char *)"-map";
    argv[n++] = (char *)"0:v:0";
    /* every decoded frame once: no duplicating or dropping to reach a frame rate */
    argv[n++] = (char *)"-fps_mode";
    argv[n++] = (char *)"passthrough";
    if (max_frames) {
        argv[n++] = (char *)"-frames:v";
        argv[n++] = nframes;
    }
    if (height) {
        argv[n++] = (char *)"-vf";
        argv[n++] = filter;
    }
    argv[n++] = (char *)"-pix_fmt";
    argv[n++] = (char *)"rgb24";
    argv[n++] = (char *)"-c:v";
    argv[n++] = (char *)"ppm";
    argv[n++] = (char *)"-f";
    argv[n++] = (char *)"image2pipe";
    argv[n++] = (char *)"pipe:1";
    argv[n] = NULL;
    if ((st = fl_ffmpeg_spawn(&r->p, r->prog, argv, FL_FFMPEG_FROM, err))) {
        fl_video_reader_close(r);
        return st;
    }
    /* the first frame's header: what makes a bad file an error of open */
    int h = read_header(r, err);
    if (h == 0) {
        /* no frame: ffmpeg's exit status and messages say why (not a video, ...) */
        char how[64], tail[FL_FFMPEG_TAIL_CHARS + 8];
        close(r->p.fd);
        r->p.fd = -1;
        int rc = fl_ffmpeg_reap(&r->p, how, sizeof how);
        fl_ffmpeg_stderr_tail(&r->p, tail, sizeof tail);
        st = rc ? fl_error_set(err, FL_E_IO, "%s: not a video ffmpeg can read (ffmpeg %s, %s): %s", path, r->prog,
                               how, *tail ? tail : "no error output")
                : fl_error_set(err, FL_E_IO, "%s: no video frames%s%s", path, *tail ? ": " : "", tail);
        fl_video_reader_close(r);
        return st;
    }
    if (h < 0) {
        fl_video_reader_close(r);
        return (fl_status)h;
    }
    r->pending = 1;
    *out = r;
    return FL_OK;
}

void fl_video_reader_size(const fl_video_reader *r, int *height, int *width)
{
    *height = r->height;
    *width = r->width;
}

int64_t fl_video_reader_frames(const fl_video_reader *r)
{
    return r ? r->frames : 0;
}

/* Whether ffmpeg's error output says the input ended before its data did. */
static int cut_short(const char *log)
{
    static const char *const marks[] = { "ended prematurely", "partial file", "runcated", "runcating", NULL };
    for (int k = 0; marks[k]; k++)
        if (strstr(log, marks[k]))
            return 1;
    return 0;
}

int fl_video_reader_frame(fl_video_reader *r, uint8_t *rgb, fl_error *err)
{
    if (r->failed.code)
        return fail(r, err);
    if (r->ended)
        return 0;
    if (r->max_frames && r->frames >= r->max_frames) {
        /* enough: ffmpeg (told -frames:v) ends by itself; any rest is not wanted */
        fl_ffmpeg_release(&r->p);
        r->ended = 1;
        return 0;
    }
    if (!r->pending) {
        int h = read_header(r, err);
        if (h < 0)
            return h;
        if (h == 0) {
            /* the end between frames: a clean end only if ffmpeg says so */
            char how[64];
            close(r->p.fd);
            r->p.fd = -1;
            int bad = fl_ffmpeg_reap(&r->p, how, sizeof how);
            char tail[FL_FFMPEG_TAIL_CHARS + 8];
            fl_ffmpeg_stderr_tail(&r->p, tail, sizeof tail);
            if (bad) {
                fl_error_set(&r->failed, FL_E_IO, "%s (video): ffmpeg (%s) failed after frame %lld, %s: %s", r->path,
                             r->prog, (long long)r->frames, how, *tail ? tail : "no error output");
                return fail(r, err);
            }
            /* ffmpeg may exit 0 on a file cut short ("File ended prematurely"): frames would
             * be missing without a word. Only such endings fail the read: other errors it
             * logs (a stream starting mid-GOP: "non-existing PPS") cost frames at the start
             * that were never whole, and it decodes the rest. */
            if (cut_short(tail)) {
                fl_error_set(&r->failed, FL_E_FORMAT, "%s (video): ffmpeg (%s) reported an error after frame %lld: %s",
                             r->path, r->prog, (long long)r->frames, tail);
                return fail(r, err);
            }
            r->ended = 1;
            return 0;
        }
    }
    r->pending = 0;
    size_t n = (size_t)r->height * (size_t)r->width * 3;
    ssize_t got = read_bytes(r, rgb, n);
    if (got < 0 || (size_t)got < n) {
        char what[128];
        if (got < 0)
            snprintf(what, sizeof what, " could not be read at frame %lld (%s)", (long long)r->frames,
                     strerror((int)-got));
        else
            snprintf(what, sizeof what, " stopped part way through frame %lld", (long long)r->frames);
        return ffmpeg_failed(r, what, err);
    }
    r->frames++;
    return 1;
}
