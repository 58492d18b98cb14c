/* Running Debian's `ffmpeg` program as a child process (fork/exec without a shell), shared
 * by the video writer (data/video.h) and the video reader (data/video_read.h): finding the
 * program (FIFOLAB_FFMPEG), starting it with one pipe to or from us, collecting the last
 * lines of its error output and its exit status for messages. */
#ifndef FL_FFMPEG_H
#define FL_FFMPEG_H

#include <stddef.h>
#include <sys/types.h>

#include "core/status.h"

#define FL_FFMPEG_PATH_MAX 4096
/* Room for fl_ffmpeg_stderr_tail's text (its last lines, at most this many characters). */
#define FL_FFMPEG_TAIL_CHARS 300

/* One ffmpeg process. `what` and `path` name it in messages ("clip.mp4 (MP4): ..."); they
 * are the caller's (not freed here). */
typedef struct fl_ffmpeg_proc {
    const char *what; /* "MP4", "GIF", "PNG frames", "video" */
    const char *path; /* the file as the user named it */
    pid_t pid;        /* 0: not running */
    int fd;           /* our end of its pipe: the write end of its stdin (FL_FFMPEG_TO) or
                         the read end of its stdout (FL_FFMPEG_FROM); -1 once closed */
    int errfd;        /* its error output (and stdout when we write to it): an unlinked
                         temporary file; -1 when none */
} fl_ffmpeg_proc;

/* Which way the pipe goes. */
typedef enum fl_ffmpeg_dir {
    FL_FFMPEG_TO,  /* we write its stdin; its stdout and stderr go to the error file */
    FL_FFMPEG_FROM /* we read its stdout; its stdin is /dev/null, its stderr the error file */
} fl_ffmpeg_dir;

/* The ffmpeg program that will run: $FIFOLAB_FFMPEG when set and not empty (a path, or a
 * name looked up in $PATH), else "ffmpeg" in $PATH; its path goes to buf. FL_E_UNSUPPORTED
 * when there is none: "ffmpeg not found: install Debian's ffmpeg package (apt-get install
 * ffmpeg)" (or a message naming FIFOLAB_FFMPEG's value). */
fl_status fl_ffmpeg_find(char *buf, size_t size, fl_error *err);

/* Prepares p (no process, no descriptors) for the file `path` (described by `what`). */
void fl_ffmpeg_init(fl_ffmpeg_proc *p, const char *what, const char *path);

/* Starts `prog argv...` (argv[0] is its name, NULL-terminated) in its own process group
 * with default signal handling, and a pipe the way `dir` says. Every descriptor of ours is
 * close-on-exec, so one ffmpeg never holds another's pipe open. FL_E_IO naming p->path
 * when the process cannot start (exec failures are reported here, not as exit 127). On
 * error nothing is left running, but p->errfd may be open: fl_ffmpeg_release closes it. */
fl_status fl_ffmpeg_spawn(fl_ffmpeg_proc *p, const char *prog, char *const argv[], fl_ffmpeg_dir dir,
                          fl_error *err);

/* Waits for the process; its exit status (128 + signal when killed; 0 when it was not
 * running or its status is lost). `how` gets its fate in words ("exit status 1"). */
int fl_ffmpeg_reap(fl_ffmpeg_proc *p, char *how, size_t size);

/* The last lines of the process's error output joined by " | " (its end kept when long),
 * or "" when it wrote none. buf needs FL_FFMPEG_TAIL_CHARS + 8 bytes. */
void fl_ffmpeg_stderr_tail(const fl_ffmpeg_proc *p, char *buf, size_t size);

/* Reaps the process and records FL_E_IO: "PATH (WHAT): ffmpeg (PROG)WHAT_HAPPENED, exit
 * status N: LAST ERROR LINES". Returns FL_E_IO. */
fl_status fl_ffmpeg_failure(fl_ffmpeg_proc *p, const char *prog, const char *what_happened, fl_error *err);

/* Closes the pipe, stops a running process (SIGTERM), waits for it and closes the error
 * file. p may be one that never started. */
void fl_ffmpeg_release(fl_ffmpeg_proc *p);

#endif
