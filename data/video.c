/* Video output through ffmpeg child processes (data/video.h, docs/video.md). */
#include "data/video.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "core/run.h"
#include "data/ffmpeg.h"

#define PATH_LEN FL_FFMPEG_PATH_MAX
#define MAX_ARGS 40
#define TAIL_CHARS FL_FFMPEG_TAIL_CHARS

/* One output: its ffmpeg (data/ffmpeg.h) writing what we pipe to it. */
typedef fl_ffmpeg_proc proc;

struct fl_video {
    char prog[PATH_LEN];
    int height, width, fps, scale;
    int nproc;
    proc p[3];
    char *path[3];     /* the outputs as the user named them (p[i].path points here) */
    int64_t frames;
    uint8_t *rgb;      /* fl_video_frame_f32's buffer */
    fl_error failed;   /* sticky: the first error of a write */
};

fl_status fl_video_find_ffmpeg(char *buf, size_t size, fl_error *err)
{
    return fl_ffmpeg_find(buf, size, err);
}

/* ---- starting ------------------------------------------------------------------------ */

/* The output's directory must exist and be writable, and the path must not be one. */
static fl_status check_output(const char *path, const char *what, fl_error *err)
{
    struct stat sb;
    if (!stat(path, &sb) && S_ISDIR(sb.st_mode))
        return fl_error_set(err, FL_E_IO, "%s (%s): is a directory", path, what);
    char dir[PATH_LEN];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path) >= (int)sizeof dir)
        return fl_error_set(err, FL_E_INVALID, "%s (%s): path too long", path, what);
    if (stat(dir, &sb))
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot write there: %s: %s", path, what, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot write there: %s is not a directory", path, what, dir);
    if (access(dir, W_OK))
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot write there: %s: %s", path, what, dir, strerror(errno));
    return FL_OK;
}

/* ---- the writer ------------------------------------------------------------------------ */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void free_procs(fl_video *v)
{
    for (int i = 0; i < v->nproc; i++) {
        fl_ffmpeg_release(&v->p[i]);
        free(v->path[i]);
    }
    free(v->rgb);
    free(v);
}

/* Stops the processes (SIGTERM) before freeing: fl_ffmpeg_release closes each input first. */
void fl_video_discard(fl_video *v)
{
    if (!v)
        return;
    free_procs(v);
}

enum { OUT_MP4, OUT_GIF, OUT_PNG };

/* The argument list of one output's ffmpeg. `s` holds the strings it points into. */
typedef struct args {
    char *argv[MAX_ARGS];
    int n;
    char size[32], rate[16], filter[512], target[PATH_LEN + 32];
} args;

static void add(args *a, const char *s)
{
    if (a->n < MAX_ARGS - 1)
        a->argv[a->n++] = (char *)s; /* execv's prototype; the strings are not written */
    a->argv[a->n] = NULL;
}

static fl_status build_args(args *a, const fl_video *v, int kind, const char *path, fl_error *err)
{
    memset(a, 0, sizeof *a);
    int H = v->height * v->scale, W = v->width * v->scale;
    snprintf(a->size, sizeof a->size, "%dx%d", v->width, v->height);
    snprintf(a->rate, sizeof a->rate, "%d", v->fps);
    add(a, v->prog);
    add(a, "-hide_banner");
    add(a, "-nostdin");
    add(a, "-nostats");
    add(a, "-loglevel");
    add(a, "error");
    add(a, "-y");
    add(a, "-f");
    add(a, "rawvideo");
    add(a, "-pix_fmt");
    add(a, "rgb24");
    add(a, "-video_size");
    add(a, a->size);
    add(a, "-framerate");
    add(a, a->rate);
    add(a, "-i");
    add(a, "pipe:0");
    /* Nearest-neighbour upscaling in ffmpeg: the pipe carries the small frames. */
    char up[96] = "";
    if (v->scale > 1)
        snprintf(up, sizeof up, "scale=%d:%d:flags=neighbor", W, H);
    /* "file:" keeps ffmpeg from reading a protocol into a name with a colon. */
    if (kind == OUT_PNG) {
        if (strchr(path, '%'))
            return fl_error_set(err, FL_E_INVALID, "%s (PNG frames): a directory name with '%%' is not supported",
                                path);
        snprintf(a->target, sizeof a->target, "file:%s/frame_%%06d.png", path);
    } else {
        snprintf(a->target, sizeof a->target, "file:%s", path);
    }
    if (strlen(path) + 32 >= sizeof a->target)
        return fl_error_set(err, FL_E_INVALID, "%s: path too long", path);
    switch (kind) {
    case OUT_MP4:
        /* yuv420p halves the chroma planes, so H.264 wants even sizes: an odd side gets
         * one black row/column of padding at the bottom/right. */
        if ((H | W) & 1)
            snprintf(a->filter, sizeof a->filter, "%s%spad=%d:%d:0:0:black", up, *up ? "," : "", W + (W & 1),
                     H + (H & 1));
        else
            snprintf(a->filter, sizeof a->filter, "%s", *up ? up : "null");
        add(a, "-vf");
        add(a, a->filter);
        add(a, "-c:v");
        add(a, "libx264");
        add(a, "-preset");
        add(a, "medium");
        add(a, "-crf");
        add(a, "18");
        add(a, "-pix_fmt");
        add(a, "yuv420p");
        add(a, "-movflags");
        add(a, "+faststart");
        add(a, "-f");
        add(a, "mp4");
        break;
    case OUT_GIF:
        /* A palette per frame (stats_mode=single, new=1): one pass that never holds more
         * than a frame, where a global palette would need every frame first. */
        snprintf(a->filter, sizeof a->filter,
                 "%s%ssplit[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1", up,
                 *up ? "," : "");
        add(a, "-vf");
        add(a, a->filter);
        add(a, "-loop");
        add(a, "0");
        add(a, "-f");
        add(a, "gif");
        break;
    default:
        snprintf(a->filter, sizeof a->filter, "%s", *up ? up : "null");
        add(a, "-vf");
        add(a, a->filter);
        add(a, "-start_number");
        add(a, "0");
        add(a, "-f");
        add(a, "image2");
        break;
    }
    add(a, a->target);
    return FL_OK;
}

fl_status fl_video_open(fl_video **out, const fl_video_opts *o, int height, int width, fl_error *err)
{
    *out = NULL;
    const char *paths[3] = { o->mp4, o->gif, o->png_dir };
    static const char *const whats[3] = { "MP4", "GIF", "PNG frames" };
    int fps = o->fps ? o->fps : FL_VIDEO_DEFAULT_FPS, scale = o->scale ? o->scale : 1;
    int any = 0;
    for (int k = 0; k < 3; k++)
        any |= paths[k] && *paths[k];
    if (!any)
        return fl_error_set(err, FL_E_INVALID, "video: no output (an MP4, a GIF or a PNG directory)");
    if (fps < 1 || fps > 240)
        return fl_error_set(err, FL_E_INVALID, "video: fps %d is outside 1..240", fps);
    if (scale < 1 || scale > 64)
        return fl_error_set(err, FL_E_INVALID, "video: scale %d is outside 1..64", scale);
    if (height < 1 || width < 1 || (int64_t)height * scale > 16384 || (int64_t)width * scale > 16384)
        return fl_error_set(err, FL_E_INVALID, "video: frames of %d x %d scaled by %d: each side must be 1..16384",
                            height, width, scale);
    fl_video *v = calloc(1, sizeof *v);
    if (!v)
        return fl_error_set(err, FL_E_NOMEM, "video writer");
    v->height = height;
    v->width = width;
    v->fps = fps;
    v->scale = scale;
    fl_error_clear(&v->failed);
    fl_status st = fl_video_find_ffmpeg(v->prog, sizeof v->prog, err);
    for (int k = 0; k < 3 && !st; k++) {
        if (!paths[k] || !*paths[k])
            continue;
        st = k == OUT_PNG ? fl_mkdirs(paths[k], err) : check_output(paths[k], whats[k], err);
        if (st)
            break;
        proc *p = &v->p[v->nproc];
        if (!(v->path[v->nproc] = dup_str(paths[k]))) {
            st = fl_error_set(err, FL_E_NOMEM, "video writer");
            break;
        }
        fl_ffmpeg_init(p, whats[k], v->path[v->nproc]);
        v->nproc++;
        args a;
        if ((st = build_args(&a, v, k, paths[k], err)) ||
            (st = fl_ffmpeg_spawn(p, v->prog, a.argv, FL_FFMPEG_TO, err)))
            break;
    }
    if (st) {
        fl_video_discard(v);
        return st;
    }
    *out = v;
    return FL_OK;
}

/* Writes n bytes to the process with SIGPIPE blocked in this thread, so a reader that
 * went away is EPIPE here. A SIGPIPE this write raised is taken back (sigtimedwait), one
 * that was pending before is left alone. Returns 0 or an errno. */
static int write_all(int fd, const uint8_t *data, size_t n)
{
    sigset_t pipe_set, old, pend;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigemptyset(&pend);
    sigpending(&pend);
    int was_pending = sigismember(&pend, SIGPIPE) == 1;
    int e = 0;
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            break;
        }
        data += w;
        n -= (size_t)w;
    }
    if (e == EPIPE && !was_pending) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return e;
}

fl_status fl_video_frame(fl_video *v, const uint8_t *rgb, fl_error *err)
{
    if (v->failed.code) {
        if (err)
            *err = v->failed;
        return v->failed.code;
    }
    size_t n = (size_t)v->height * (size_t)v->width * 3;
    for (int i = 0; i < v->nproc; i++) {
        proc *p = &v->p[i];
        int e = write_all(p->fd, rgb, n);
        if (!e)
            continue;
        close(p->fd);
        p->fd = -1;
        char what[96];
        snprintf(what, sizeof what, " stopped reading frames at frame %lld (%s)", (long long)v->frames,
                 e == EPIPE ? "broken pipe" : strerror(e));
        fl_ffmpeg_failure(p, v->prog, what, &v->failed);
        if (err)
            *err = v->failed;
        return v->failed.code;
    }
    v->frames++;
    return FL_OK;
}

fl_status fl_video_frame_f32(fl_video *v, const float *frame, int channels, fl_colour_space space,
                             fl_error *err)
{
    if (!v->rgb && !(v->rgb = malloc((size_t)v->height * (size_t)v->width * 3)))
        return fl_error_set(err, FL_E_NOMEM, "video: frame buffer");
    fl_status st = fl_colour_frame(frame, channels, v->height, v->width, space, v->rgb, err);
    return st ? st : fl_video_frame(v, v->rgb, err);
}

int64_t fl_video_frames(const fl_video *v)
{
    return v ? v->frames : 0;
}

fl_status fl_video_close(fl_video *v, fl_error *err)
{
    if (!v)
        return FL_OK;
    fl_status st = FL_OK;
    fl_error e;
    fl_error_clear(&e);
    if (v->failed.code) {
        e = v->failed;
        st = e.code;
    }
    /* every input first, so the processes finish their files side by side */
    for (int i = 0; i < v->nproc; i++)
        if (v->p[i].fd >= 0) {
            close(v->p[i].fd);
            v->p[i].fd = -1;
        }
    for (int i = 0; i < v->nproc; i++) {
        proc *p = &v->p[i];
        if (p->pid <= 0)
            continue;
        char how[64], tail[TAIL_CHARS + 8];
        int rc = fl_ffmpeg_reap(p, how, sizeof how);
        if (rc && !st) {
            fl_ffmpeg_stderr_tail(p, tail, sizeof tail);
            st = fl_error_set(&e, FL_E_IO, "%s (%s): ffmpeg (%s) failed, %s: %s", p->path, p->what, v->prog, how,
                              *tail ? tail : "no error output");
        }
    }
    if (!st && v->frames == 0)
        st = fl_error_set(&e, FL_E_INVALID, "%s (%s): no frames to write", v->p[0].path, v->p[0].what);
    free_procs(v);
    if (st && err)
        *err = e;
    return st;
}
