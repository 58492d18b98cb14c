/* ffmpeg child processes shared by the video writer and reader (data/ffmpeg.h). */
#include "data/ffmpeg.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TAIL_BYTES 4096
#define TAIL_LINES 3

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

fl_status fl_ffmpeg_find(char *buf, size_t size, fl_error *err)
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

/* ---- ffmpeg's error output and exit status ------------------------------------------------ */

void fl_ffmpeg_init(fl_ffmpeg_proc *p, const char *what, const char *path)
{
    memset(p, 0, sizeof *p);
    p->what = what;
    p->path = path;
    p->fd = p->errfd = -1;
}

void fl_ffmpeg_stderr_tail(const fl_ffmpeg_proc *p, char *buf, size_t size)
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
    if (len > FL_FFMPEG_TAIL_CHARS) {
        memmove(buf + 3, buf + len - (FL_FFMPEG_TAIL_CHARS - 3), FL_FFMPEG_TAIL_CHARS - 3 + 1);
        memcpy(buf, "...", 3);
    }
}

int fl_ffmpeg_reap(fl_ffmpeg_proc *p, char *how, size_t size)
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

fl_status fl_ffmpeg_failure(fl_ffmpeg_proc *p, const char *prog, const char *what_happened, fl_error *err)
{
    char how[64], tail[FL_FFMPEG_TAIL_CHARS + 8];
    fl_ffmpeg_reap(p, how, sizeof how);
    fl_ffmpeg_stderr_tail(p, tail, sizeof tail);
    return fl_error_set(err, FL_E_IO, "%s (%s): ffmpeg (%s)%s, %s: %s", p->path, p->what, prog, what_happened, how,
                        *tail ? tail : "no error output");
}

void fl_ffmpeg_release(fl_ffmpeg_proc *p)
{
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->pid > 0) {
        char how[64];
        kill(p->pid, SIGTERM);
        fl_ffmpeg_reap(p, how, sizeof how);
    }
    if (p->errfd >= 0) {
        close(p->errfd);
        p->errfd = -1;
    }
}

/* ---- starting ------------------------------------------------------------------------ */

static int cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);
    return f < 0 ? -1 : fcntl(fd, F_SETFD, f | FD_CLOEXEC);
}

static int temp_file(void)
{
    const char *tmp = getenv("TMPDIR");
    char name[FL_FFMPEG_PATH_MAX];
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

static void close_pair(int fds[2])
{
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

fl_status fl_ffmpeg_spawn(fl_ffmpeg_proc *p, const char *prog, char *const argv[], fl_ffmpeg_dir dir,
                          fl_error *err)
{
    int io[2] = { -1, -1 }, ep[2] = { -1, -1 }, null_in = -1;
    p->errfd = temp_file();
    if (p->errfd < 0)
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot create a temporary file for ffmpeg's messages: %s",
                            p->path, p->what, strerror(errno));
    if (dir == FL_FFMPEG_FROM && (null_in = open("/dev/null", O_RDONLY)) >= 0)
        cloexec(null_in);
    if ((dir == FL_FFMPEG_FROM && null_in < 0) || pipe(io) || pipe(ep) || cloexec(io[0]) || cloexec(io[1]) ||
        cloexec(ep[0]) || cloexec(ep[1])) {
        int e = errno;
        close_pair(io);
        close_pair(ep);
        if (null_in >= 0)
            close(null_in);
        return fl_error_set(err, FL_E_IO, "%s (%s): pipe: %s", p->path, p->what, strerror(e));
    }
    /* the child's stdin, stdout, stderr */
    int fd0 = dir == FL_FFMPEG_TO ? io[0] : null_in, fd1 = dir == FL_FFMPEG_TO ? p->errfd : io[1], fd2 = p->errfd;
    #ifdef __linux__
    pid_t parent = getpid();
#endif
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close_pair(io);
        close_pair(ep);
        if (null_in >= 0)
            close(null_in);
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
#ifdef __linux__
        /* Dies with fifolab: a killed run's ffmpeg must not live on, still writing a
         * video in the run directory a resume writes again. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
#endif
        if (dup2(fd0, 0) < 0 || dup2(fd1, 1) < 0 || dup2(fd2, 2) < 0) {
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
    if (null_in >= 0)
        close(null_in);
    close(ep[1]);
    p->pid = pid;
    if (dir == FL_FFMPEG_TO) {
        close(io[0]);
        p->fd = io[1];
    } else {
        close(io[1]);
        p->fd = io[0];
    }
    /* exec succeeded when the error pipe closes empty (close-on-exec) */
    int e = 0;
    ssize_t n;
    while ((n = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(ep[0]);
    if (n == (ssize_t)sizeof e) {
        char how[64];
        close(p->fd);
        p->fd = -1;
        fl_ffmpeg_reap(p, how, sizeof how);
        return fl_error_set(err, FL_E_IO, "%s (%s): cannot run %s: %s", p->path, p->what, prog, strerror(e));
    }
    return FL_OK;
}
