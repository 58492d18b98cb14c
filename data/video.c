/* Video output through ffmpeg child processes (data/video.h, docs/video.md). */
#include "data/video.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/run.h"

#define PATH_LEN 4096
#define MAX_ARGS 40
#define TAIL_BYTES 4096
#define TAIL_LINES 3
#define TAIL_CHARS 300

typedef struct proc {
    const char *what;  /* "MP4", "GIF", "PNG frames" */
    char *path;        /* the output as the user named it (for messages) */
    pid_t pid;         /* 0: not running */
    int in;            /* write end of its stdin; -1 once closed */
    int errfd;         /* its stderr and stdout: an unlinked temporary file */
} proc;

struct fl_video {
    char prog[PATH_LEN];
    int height, width, fps, scale;
    int nproc;
    proc p[3];
    int64_t frames;
    uint8_t *rgb;      /* fl_video_frame_f32's buffer */
    fl_error failed;   /* sticky: the first error of a write */
};

/* ---- finding ffmpeg ------------------------------------------------------------------ */

static int executable(const char *path)
{
    struct stat sb;
    return !stat(path, &sb) && S_ISREG(sb.st_mode) && !access(path, X_OK);
}

/* Looks `name` up like execvp would, but here in the parent: the child of a threaded
 * program may only call async-signal-safe functions, and execv of a known path is one. */
static int search_path(const char *name, char *buf, size_t size)
{
    if (strchr(name, '/')) {
        if (snprintf(buf, size, "%s", name) >= (int)size)
            return 0;
        return executable(buf);
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (const char *d = path;; ) {
        const char *e = strchr(d, ':');
        size_t n = e ? (size_t)(e - d) : strlen(d);
        int w = n ? snprintf(buf, size, "%.*s/%s", (int)n, d, name) : snprintf(buf, size, "./%s", name);
        if (w > 0 && w < (int)size && executable(buf))
            return 1;
        if (!e)
            return 0;
        d = e + 1;
    }
}

fl_status fl_video_find_ffmpeg(char *buf, size_t size, fl_error *err)
{
    const char *env = getenv("FIFOLAB_FFMPEG");
    if (env && *env) {
        if (search_path(env, buf, size))
            return FL_OK;
        return fl_error_set(err, FL_E_UNSUPPORTED,
                            "ffmpeg not found: FIFOLAB_FFMPEG=%s is not an executable file%s", env,
                            strchr(env, '/') ? "" : " in $PATH");
    }
    if (search_path("ffmpeg", buf, size))
        return FL_OK;
    return fl_error_set(err, FL_E_UNSUPPORTED,
                        "ffmpeg not found: install Debian's ffmpeg package (apt-get install ffmpeg)");
}

/* ---- ffmpeg's error output --------------------------------------------------------------- */

/* The last lines of what the process wrote to its error file, joined by " | ". */
static void stderr_tail(const proc *p, char *buf, size_t size)
{
    buf[0] = 0;
    if (p->errfd < 0)
        return;
    char raw[TAIL_BYTES + 1];
    off_t end = lseek(p->errfd, 0, SEEK_END);
    off_t from = end > TAIL_BYTES ? end - TAIL_BYTES : 0;
    ssize_t n = end > 0 ? pread(p->errfd, raw, (size_t)(end - from), from) : 0;
    if (n <= 0)
        return;
    raw[n] = 0;
    /* lines from the end, skipping empty ones */
    const char *lines[TAIL_LINES];
    int k = 0;
    char *s = raw + n;
    while (k < TAIL_LINES && s > raw) {
        while (s > raw && (s[-1] == '\n' || s[-1] == '\r'))
            *--s = 0;
        char *b = s;
        while (b > raw && b[-1] != '\n' && b[-1] != '\r')
            b--;
        if (b < s)
            lines[k++] = b;
        s = b;
    }
    size_t used = 0;
    for (int i = k - 1; i >= 0 && used + 1 < size; i--) {
        int w = snprintf(buf + used, size - used, "%s%s", used ? " | " : "", lines[i]);
        if (w < 0)
            break;
        used += (size_t)w < size - used ? (size_t)w : size - used - 1;
    }
    /* keep the end, which says what failed */
    size_t len = strlen(buf);
    if (len > TAIL_CHARS) {
        memmove(buf + 3, buf + len - (TAIL_CHARS - 3), TAIL_CHARS - 3 + 1);
        memcpy(buf, "...", 3);
    }
}

/* Waits for the process; 0 when it exited with status 0. `how` gets its fate in words. */
static int reap(proc *p, char *how, size_t size)
{
    int status = 0;
    pid_t r;
    snprintf(how, size, "unknown exit status");
    if (p->pid <= 0)
        return 0;
    while ((r = waitpid(p->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    if (r < 0) /* ECHILD: someone set SIGCHLD to SIG_IGN; the status is lost */
        return 0;
    if (WIFEXITED(status)) {
        snprintf(how, size, "exit status %d", WEXITSTATUS(status));
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        snprintf(how, size, "killed by signal %d", WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return 1;
}

static fl_status failure(proc *p, const char *prog, const char *what_happened, fl_error *err)
{
    char how[64], tail[TAIL_CHARS + 8];
    reap(p, how, sizeof how);
    stderr_tail(p, tail, sizeof tail);
    return fl_error_set(err, FL_E_IO, "%s (%s): ffmpeg (%s)%s, %s: %s", p->path, p->what, prog, what_happened,
                        how, *tail ? tail : "no error output");
}

/* ---- starting ------------------------------------------------------------------------ */

static int cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);
    return f < 0 ? -1 : fcntl(fd, F_SETFD, f | FD_CLOEXEC);
}

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

static int temp_file(void)
{
    const char *tmp = getenv("TMPDIR");
    char name[PATH_LEN];
    int fd = -1;
    if (tmp && *tmp && snprintf(name, sizeof name, "%s/fifolab-ffmpeg-XXXXXX", tmp) < (int)sizeof name)
        fd = mkstemp(name);
    if (fd < 0) {
        snprintf(name, sizeof name, "/tmp/fifolab-ffmpeg-XXXXXX");
        fd = mkstemp(name);
    }
    if (fd >= 0) {
        unlink(name); /* nothing to clean up, whatever happens to us */
        cloexec(fd);
    }
    return fd;
}

/* Starts `prog argv...` with its stdin a pipe from us and its stdout/stderr a temporary
 * file. Every descriptor of ours is close-on-exec, so a later ffmpeg does not hold an
 * earlier one's pipe open (it would never see the end of its input). */
static fl_status spawn(proc *p, const char *prog, char *const argv[], fl_error *err)
{
    int in[2] = { -1, -1 }, ep[2] = { -1, -1 };
    p->errfd = temp_file();
    if (p->errfd < 0)
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot create a temporary file for ffmpeg's messages: %s",
                            p->path, p->what, strerror(errno));
    if (pipe(in) || pipe(ep) || cloexec(in[0]) || cloexec(in[1]) || cloexec(ep[0]) || cloexec(ep[1])) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            if (in[i] >= 0)
                close(in[i]);
            if (ep[i] >= 0)
                close(ep[i]);
        }
        return fl_error_set(err, FL_E_IO, "%s (%s): pipe: %s", p->path, p->what, strerror(e));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(in[0]);
        close(in[1]);
        close(ep[0]);
        close(ep[1]);
        return fl_error_set(err, FL_E_IO, "%s (%s): fork: %s", p->path, p->what, strerror(e));
    }
    if (pid == 0) {
        /* Only async-signal-safe calls from here to exec. Own process group: a Ctrl-C
         * meant for fifolab must not stop ffmpeg early; fifolab ends its input instead,
         * and ffmpeg finishes the file. Signal state is reset to defaults (a SIG_IGN or
         * blocked mask would survive exec). */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGPIPE, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        if (dup2(in[0], 0) < 0 || dup2(p->errfd, 1) < 0 || dup2(p->errfd, 2) < 0) {
            int e = errno;
            ssize_t w = write(ep[1], &e, sizeof e);
            (void)w;
            _exit(127);
        }
        execv(prog, argv);
        int e = errno;
        ssize_t w = write(ep[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(in[0]);
    close(ep[1]);
    p->pid = pid;
    p->in = in[1];
    /* exec succeeded when the error pipe closes empty (close-on-exec) */
    int e = 0;
    ssize_t n;
    while ((n = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    if (n == (ssize_t)sizeof e) {
        char how[64];
        close(p->in);
        p->in = -1;
        reap(p, how, sizeof how);
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot run %s: %s", p->path, p->what, prog, strerror(e));
    }
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
        if (v->p[i].in >= 0)
            close(v->p[i].in);
        if (v->p[i].errfd >= 0)
            close(v->p[i].errfd);
        free(v->p[i].path);
    }
    free(v->rgb);
    free(v);
}

void fl_video_discard(fl_video *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->nproc; i++) {
        proc *p = &v->p[i];
        if (p->in >= 0) {
            close(p->in);
            p->in = -1;
        }
        if (p->pid > 0) {
            char how[64];
            kill(p->pid, SIGTERM);
            reap(p, how, sizeof how);
        }
    }
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
        p->what = whats[k];
        p->in = p->errfd = -1;
        if (!(p->path = dup_str(paths[k]))) {
            st = fl_error_set(err, FL_E_NOMEM, "video writer");
            break;
        }
        v->nproc++;
        args a;
        if ((st = build_args(&a, v, k, paths[k], err)) || (st = spawn(p, v->prog, a.argv, err)))
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
        int e = write_all(p->in, rgb, n);
        if (!e)
            continue;
        close(p->in);
        p->in = -1;
        char what[96];
        snprintf(what, sizeof what, " stopped reading frames at frame %lld (%s)", (long long)v->frames,
                 e == EPIPE ? "broken pipe" : strerror(e));
        failure(p, v->prog, what, &v->failed);
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
        if (v->p[i].in >= 0) {
            close(v->p[i].in);
            v->p[i].in = -1;
        }
    for (int i = 0; i < v->nproc; i++) {
        proc *p = &v->p[i];
        if (p->pid <= 0)
            continue;
        char how[64], tail[TAIL_CHARS + 8];
        int rc = reap(p, how, sizeof how);
        if (rc && !st) {
            stderr_tail(p, tail, sizeof tail);
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
