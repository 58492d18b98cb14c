/* cmocka suite for data/video_read.c (docs/data.md "Bringing your own videos"): frames of
 * lossless videos made by the real ffmpeg (FFV1 in Matroska, PNG in AVI) decoded exactly,
 * at their own size and scaled; a round trip through data/video.c's writer; the errors for
 * a missing file, a directory, a non-video, an empty and a truncated file, all naming the
 * file; and, through fake ffmpegs named by FIFOLAB_FFMPEG (no real one needed), the
 * arguments passed, the end of the stream, output cut short, ffmpeg failing after some
 * frames, frames changing size, malformed output, max_frames and an early close. Tests that
 * need the real ffmpeg are skipped without it. */
#define _XOPEN_SOURCE 700 /* nftw (tests/tmpdir.h) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/colour.h"
#include "data/ffmpeg.h"
#include "data/video.h"
#include "data/video_read.h"
#include "tests/tmpdir.h"

static char dir[256];
static char ffmpeg[FL_FFMPEG_PATH_MAX]; /* the real one; "" when absent */

/* ---- helpers --------------------------------------------------------------------------- */

static const char *in_dir(char *buf, size_t n, const char *name)
{
    int k = snprintf(buf, n, "%s/%s", dir, name);
    assert_true(k > 0 && (size_t)k < n);
    return buf;
}

static void put_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *get_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* A fake ffmpeg: a shell script in the test directory; FIFOLAB_FFMPEG names it. */
static void fake(const char *name, const char *body)
{
    char path[512];
    in_dir(path, sizeof path, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0755), 0);
    assert_int_equal(setenv("FIFOLAB_FFMPEG", path, 1), 0);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The real ffmpeg with these arguments (after the program), quiet; its exit status. */
static int run_ffmpeg(const char *const *args)
{
    char *argv[64];
    int n = 0;
    argv[n++] = ffmpeg;
    argv[n++] = (char *)"-y";
    argv[n++] = (char *)"-v";
    argv[n++] = (char *)"error";
    for (; *args; args++) {
        assert_true(n < 62);
        argv[n++] = (char *)*args;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execv(ffmpeg, argv);
        _exit(127);
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0)
        assert_int_equal(errno, EINTR);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

/* Skips the calling test when there is no real ffmpeg. */
#define NEED_FFMPEG()                                                     \
    do {                                                                  \
        if (!ffmpeg[0]) {                                                 \
            print_message("(no ffmpeg: skipped)\n");                      \
            skip();                                                       \
        }                                                                 \
    } while (0)

/* The test video: N frames of H x W, every 2 x 2 block one colour, so an area-averaging
 * halving is exact too. */
enum { H = 12, W = 16, N = 11 };

static uint8_t pattern(int t, int y, int x, int c)
{
    return (uint8_t)((t * 37 + (y / 2) * 29 + (x / 2) * 13 + c * 80) & 255);
}

/* The frame t of the pattern at h x w (h = H / s). */
static void pattern_frame(int t, int s, uint8_t *rgb)
{
    for (int y = 0; y < H / s; y++)
        for (int x = 0; x < W / s; x++)
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * (W / s) + x) * 3 + c] = pattern(t, y * s, x * s, c);
}

static char mkv[300], avi[300]; /* FFV1 in Matroska, PNG in AVI (made once by setup) */

static int make_videos(void)
{
    char raw[300];
    in_dir(raw, sizeof raw, "pattern.rgb");
    uint8_t *b = malloc((size_t)N * H * W * 3);
    if (!b)
        return -1;
    for (int t = 0; t < N; t++)
        pattern_frame(t, 1, b + (size_t)t * H * W * 3);
    put_bytes(raw, b, (size_t)N * H * W * 3);
    free(b);
    char size[32];
    snprintf(size, sizeof size, "%dx%d", W, H);
    in_dir(mkv, sizeof mkv, "lossless.mkv");
    in_dir(avi, sizeof avi, "lossless.avi");
    const char *a1[] = { "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-r", "8", "-i", raw,
                         "-c:v", "ffv1", "-pix_fmt", "bgr0", mkv, NULL };
    const char *a2[] = { "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-r", "8", "-i", raw,
                         "-c:v", "png", "-pix_fmt", "rgb24", avi, NULL };
    if (run_ffmpeg(a1) || run_ffmpeg(a2)) {
        print_message("ffmpeg could not make the test videos (FFV1/PNG encoders missing?)\n");
        ffmpeg[0] = 0;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fl_test_video_read_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    unsetenv("FIFOLAB_FFMPEG");
    fl_error err;
    if (fl_ffmpeg_find(ffmpeg, sizeof ffmpeg, &err))
        ffmpeg[0] = 0;
    return ffmpeg[0] ? make_videos() : 0;
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("FIFOLAB_FFMPEG");
    return fl_test_rm_tree(dir);
}

/* Reads every frame of `path` at h x w (0 x 0: own size) and checks it against the
 * pattern at scale s, exactly. */
static void expect_pattern(const char *path, int h, int w, const char *flags, int s)
{
    fl_video_reader *r = (fl_video_reader *)&r;
    fl_error err;
    fl_video_read_opts o = { .scale_flags = flags };
    if (fl_video_reader_open(path, h, w, &o, &r, &err))
        fail_msg("%s", err.msg);
    assert_non_null(r);
    int gh, gw;
    fl_video_reader_size(r, &gh, &gw);
    assert_int_equal(gh, H / s);
    assert_int_equal(gw, W / s);
    size_t fs = (size_t)gh * gw * 3;
    uint8_t *got = malloc(fs), *want = malloc(fs);
    assert_non_null(got);
    assert_non_null(want);
    for (int t = 0; t < N; t++) {
        memset(got, 0xAA, fs);
        int rc = fl_video_reader_frame(r, got, &err);
        if (rc != 1)
            fail_msg("%s: frame %d: %d (%s)", path, t, rc, rc < 0 ? err.msg : "end");
        pattern_frame(t, s, want);
        for (size_t i = 0; i < fs; i++)
            if (got[i] != want[i])
                fail_msg("%s at %dx%d (%s): frame %d byte %zu: %d, expected %d", path, gh, gw,
                         flags ? flags : "area", t, i, got[i], want[i]);
        assert_int_equal(fl_video_reader_frames(r), t + 1);
    }
    /* the end, and the end again; no frame written */
    memset(got, 0xAA, fs);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(got[0], 0xAA);
    assert_int_equal(fl_video_reader_frames(r), N);
    fl_video_reader_close(r);
    free(got);
    free(want);
}

/* ---- the real ffmpeg ----------------------------------------------------------------------- */

static void test_lossless_own_size(void **state)
{
    (void)state;
    NEED_FFMPEG();
    expect_pattern(mkv, 0, 0, NULL, 1);
    expect_pattern(avi, 0, 0, NULL, 1);
}

/* Scaled to half size: area averaging of 2 x 2 blocks of one colour, and nearest
 * neighbour, are both exact; the same size asked for explicitly is the file itself. */
static void test_lossless_scaled(void **state)
{
    (void)state;
    NEED_FFMPEG();
    expect_pattern(mkv, H / 2, W / 2, NULL, 2);
    expect_pattern(avi, H / 2, W / 2, "neighbor", 2);
    expect_pattern(mkv, H, W, "bicubic", 1);
}

/* max_frames stops early; frames beyond it are never returned. */
static void test_max_frames(void **state)
{
    (void)state;
    NEED_FFMPEG();
    fl_video_reader *r;
    fl_error err;
    fl_video_read_opts o = { .max_frames = 4 };
    assert_int_equal(fl_video_reader_open(mkv, 0, 0, &o, &r, &err), FL_OK);
    uint8_t got[H * W * 3], want[H * W * 3];
    for (int t = 0; t < 4; t++) {
        assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
        pattern_frame(t, 1, want);
        assert_memory_equal(got, want, sizeof want);
    }
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(fl_video_reader_frames(r), 4);
    fl_video_reader_close(r);
    /* more than the file holds: all of them */
    o.max_frames = N + 5;
    assert_int_equal(fl_video_reader_open(avi, 0, 0, &o, &r, &err), FL_OK);
    int n = 0;
    while (fl_video_reader_frame(r, got, &err) == 1)
        n++;
    assert_int_equal(n, N);
    fl_video_reader_close(r);
}

/* A video made by data/video.c's writer comes back: every frame once, at its size; exactly
 * for PNG frames, within x264's tolerance for an MP4 of grey frames. */
static void test_writer_round_trip(void **state)
{
    (void)state;
    NEED_FFMPEG();
    enum { VH = 16, VW = 24, VN = 9 };
    char mp4[300], png[300], first[340];
    in_dir(mp4, sizeof mp4, "written.mp4");
    in_dir(png, sizeof png, "written_png");
    fl_video_opts vo = { .mp4 = mp4, .png_dir = png, .fps = 8, .scale = 1 };
    fl_video *v;
    fl_error err;
    assert_int_equal(fl_video_open(&v, &vo, VH, VW, &err), FL_OK);
    float frame[VH * VW];
    uint8_t want[VN][VH * VW * 3];
    for (int t = 0; t < VN; t++) {
        for (int i = 0; i < VH * VW; i++)
            frame[i] = (float)(2.0 * sin(0.2 * (i % VW) + 0.3 * (i / VW) + 0.5 * t));
        assert_int_equal(fl_colour_frame(frame, 1, VH, VW, FL_COLOUR_LATENT, want[t], &err), FL_OK);
        assert_int_equal(fl_video_frame_f32(v, frame, 1, FL_COLOUR_LATENT, &err), FL_OK);
    }
    if (fl_video_close(v, &err))
        fail_msg("%s", err.msg);
    /* the MP4 */
    fl_video_reader *r;
    assert_int_equal(fl_video_reader_open(mp4, 0, 0, NULL, &r, &err), FL_OK);
    int gh, gw;
    fl_video_reader_size(r, &gh, &gw);
    assert_int_equal(gh, VH);
    assert_int_equal(gw, VW);
    uint8_t got[VH * VW * 3];
    int n = 0, rc;
    double sum = 0;
    int worst = 0;
    while ((rc = fl_video_reader_frame(r, got, &err)) == 1) {
        assert_true(n < VN);
        for (int i = 0; i < VH * VW * 3; i++) {
            int d = abs((int)got[i] - (int)want[n][i]);
            sum += d;
            worst = d > worst ? d : worst;
        }
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, VN);
    double mean = sum / ((double)VN * VH * VW * 3);
    if (mean > 2.0 || worst > 24)
        fail_msg("MP4 round trip: mean abs difference %.2f, worst %d", mean, worst);
    fl_video_reader_close(r);
    /* one PNG frame: a one-frame video, exact */
    in_dir(first, sizeof first, "written_png/frame_000004.png");
    assert_int_equal(fl_video_reader_open(first, 0, 0, NULL, &r, &err), FL_OK);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_memory_equal(got, want[4], sizeof got);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    fl_video_reader_close(r);
}

/* Bad files: FL_E_IO naming the file, nothing left open (*out NULL). */
static void expect_open_error(const char *path, fl_status code, const char *says)
{
    fl_video_reader *r = (fl_video_reader *)&r;
    fl_error err;
    fl_error_clear(&err);
    fl_status st = fl_video_reader_open(path, 0, 0, NULL, &r, &err);
    if (st != code)
        fail_msg("%s: status %d, expected %d (%s)", path, (int)st, (int)code, err.msg);
    assert_null(r);
    assert_int_equal(err.code, code);
    if (strncmp(err.msg, path, strlen(path)))
        fail_msg("%s: the message does not start with the file: %s", path, err.msg);
    if (says && !strstr(err.msg, says))
        fail_msg("%s: the message does not say \"%s\": %s", path, says, err.msg);
}

static void test_bad_files(void **state)
{
    (void)state;
    char p[300];
    /* these need no ffmpeg: checked before it starts */
    expect_open_error(in_dir(p, sizeof p, "nope.mkv"), FL_E_IO, "No such file or directory");
    expect_open_error(dir, FL_E_IO, "is a directory");
    NEED_FFMPEG();
    static const char text[] = "hello, this is not a video\n";
    put_bytes(in_dir(p, sizeof p, "notes.txt"), text, sizeof text - 1);
    expect_open_error(p, FL_E_IO, "not a video ffmpeg can read");
    fl_video_reader *r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(p, 0, 0, NULL, &r, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "Invalid data")); /* ffmpeg's own words */
    put_bytes(in_dir(p, sizeof p, "empty.mkv"), "", 0);
    expect_open_error(p, FL_E_IO, NULL);
    /* a video cut before its first frame */
    size_t n;
    uint8_t *b = get_bytes(avi, &n);
    put_bytes(in_dir(p, sizeof p, "headers_only.avi"), b, n * 3 / 10);
    expect_open_error(p, FL_E_IO, NULL);
    free(b);
    /* a name ffmpeg would take for a protocol or an option is read as a file */
    char odd[300];
    in_dir(odd, sizeof odd, "-x:y.mkv");
    b = get_bytes(mkv, &n);
    put_bytes(odd, b, n);
    free(b);
    assert_int_equal(fl_video_reader_open(odd, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t got[H * W * 3];
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    fl_video_reader_close(r);
}

/* A video truncated part way: the frames before the cut come back exactly; the cut must
 * then be an error naming the file, not a clean end.
 * KNOWN BUG (data/video_read.c:319-330): ffmpeg exits with status 0 on a truncated
 * Matroska file (it only logs "File ended prematurely"), and the reader takes exit status
 * 0 as a clean end, so the lost frames go unnoticed. Reproducer: the half of an 11-frame
 * FFV1 .mkv gives 3 frames, then fl_video_reader_frame returns 0. The test skips at that
 * point until it is fixed. */
static void test_truncated(void **state)
{
    (void)state;
    NEED_FFMPEG();
    size_t n;
    uint8_t *b = get_bytes(mkv, &n);
    char p[300];
    put_bytes(in_dir(p, sizeof p, "half.mkv"), b, n / 2);
    free(b);
    fl_video_reader *r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(p, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t got[H * W * 3], want[H * W * 3];
    int t = 0, rc;
    while ((rc = fl_video_reader_frame(r, got, &err)) == 1) {
        pattern_frame(t, 1, want);
        assert_memory_equal(got, want, sizeof want);
        t++;
    }
    fl_video_reader_close(r);
    assert_true(t >= 1 && t < N);
    /* ffmpeg exits 0 here, having logged "File ended prematurely": still an error, not a
     * clean end with frames missing */
    assert_int_equal(rc, FL_E_FORMAT);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "reported an error"));
}

/* ---- fake ffmpegs: the protocol ----------------------------------------------------------- */

/* A PPM stream of frames of h x w whose bytes are (k * 7 + i) & 255 for frame k. */
static size_t ppm_stream(uint8_t *out, int nframes, int h, int w)
{
    size_t at = 0;
    for (int k = 0; k < nframes; k++) {
        at += (size_t)sprintf((char *)out + at, "P6\n%d %d\n255\n", w, h);
        for (int i = 0; i < h * w * 3; i++)
            out[at++] = (uint8_t)((k * 7 + i) & 255);
    }
    return at;
}

static char input[300]; /* an existing file to "decode" (the fakes do not read it) */

static void make_input(void)
{
    in_dir(input, sizeof input, "input.bin");
    put_bytes(input, "x", 1);
}

/* The arguments given to ffmpeg; the frames of a good stream, in order; the end. */
static void test_fake_protocol(void **state)
{
    (void)state;
    make_input();
    uint8_t s[4096];
    size_t len = ppm_stream(s, 3, 2, 3);
    char sp[300], args[300], body[800];
    put_bytes(in_dir(sp, sizeof sp, "s3.ppm"), s, len);
    in_dir(args, sizeof args, "args.txt");
    snprintf(body, sizeof body, "printf '%%s\\n' \"$@\" > '%s'\ncat '%s'", args, sp);
    fake("good.sh", body);
    fl_video_reader *r;
    fl_error err;
    fl_video_read_opts o = { .scale_flags = "bicubic", .max_frames = 7 };
    assert_int_equal(fl_video_reader_open(input, 2, 3, &o, &r, &err), FL_OK);
    uint8_t got[18];
    for (int k = 0; k < 3; k++) {
        assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
        for (int i = 0; i < 18; i++)
            assert_int_equal(got[i], (k * 7 + i) & 255);
    }
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(fl_video_reader_frames(r), 3);
    fl_video_reader_close(r);
    /* what ffmpeg was told: one argument per line */
    size_t n;
    char *a = (char *)get_bytes(args, &n);
    a[n] = 0;
    char want[400];
    snprintf(want, sizeof want, "\n-i\nfile:%s\n", input);
    assert_non_null(strstr(a, want));
    assert_non_null(strstr(a, "\n-map\n0:v:0\n"));
    assert_non_null(strstr(a, "\n-fps_mode\npassthrough\n"));
    assert_non_null(strstr(a, "\n-frames:v\n7\n"));
    assert_non_null(strstr(a, "\n-vf\nscale=3:2:flags=bicubic\n")); /* width:height */
    assert_non_null(strstr(a, "\n-pix_fmt\nrgb24\n"));
    assert_non_null(strstr(a, "\npipe:1\n"));
    free(a);
    /* own size: no scaling, no frame limit; the default flags are "area" */
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    int h, w;
    fl_video_reader_size(r, &h, &w);
    assert_int_equal(h, 2);
    assert_int_equal(w, 3);
    while (fl_video_reader_frame(r, got, &err) == 1)
        ;
    fl_video_reader_close(r);
    a = (char *)get_bytes(args, &n);
    a[n] = 0;
    assert_null(strstr(a, "-vf"));
    assert_null(strstr(a, "-frames:v"));
    free(a);
    assert_int_equal(fl_video_reader_open(input, 4, 4, NULL, &r, &err), FL_E_FORMAT); /* frames of 2x3 */
    a = (char *)get_bytes(args, &n);
    a[n] = 0;
    assert_non_null(strstr(a, "\nscale=4:4:flags=area\n"));
    free(a);
    unsetenv("FIFOLAB_FFMPEG");
}

/* The output stops inside a frame (ffmpeg killed, say): FL_E_IO naming the file and the
 * frame, sticky. */
static void test_fake_cut_short(void **state)
{
    (void)state;
    make_input();
    uint8_t s[4096];
    size_t len = ppm_stream(s, 2, 4, 4);
    char sp[300], body[600];
    put_bytes(in_dir(sp, sizeof sp, "cut.ppm"), s, len - 10);
    snprintf(body, sizeof body, "cat '%s'", sp);
    fake("cut.sh", body);
    fl_video_reader *r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t got[48];
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_int_equal(fl_video_reader_frame(r, got, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, input));
    assert_non_null(strstr(err.msg, "part way through frame 1"));
    fl_error again;
    assert_int_equal(fl_video_reader_frame(r, got, &again), FL_E_IO);
    assert_string_equal(again.msg, err.msg);
    assert_int_equal(fl_video_reader_frames(r), 1);
    fl_video_reader_close(r);
    /* cut inside the second header */
    put_bytes(sp, s, 13 + 48 + 5);
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    int rc = fl_video_reader_frame(r, got, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err.msg, input));
    fl_video_reader_close(r);
    unsetenv("FIFOLAB_FFMPEG");
}

/* ffmpeg fails after some frames: its exit status and last error lines, naming the file. */
static void test_fake_fails_late(void **state)
{
    (void)state;
    make_input();
    uint8_t s[4096];
    size_t len = ppm_stream(s, 2, 2, 2);
    char sp[300], body[600];
    put_bytes(in_dir(sp, sizeof sp, "late.ppm"), s, len);
    snprintf(body, sizeof body, "cat '%s'\necho 'first line' >&2\necho 'decode error at packet 9' >&2\nexit 3", sp);
    fake("late.sh", body);
    fl_video_reader *r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t got[12];
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_int_equal(fl_video_reader_frame(r, got, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, input));
    assert_non_null(strstr(err.msg, "after frame 2"));
    assert_non_null(strstr(err.msg, "exit status 3"));
    assert_non_null(strstr(err.msg, "decode error at packet 9"));
    fl_error again;
    assert_int_equal(fl_video_reader_frame(r, got, &again), FL_E_IO);
    assert_string_equal(again.msg, err.msg);
    fl_video_reader_close(r);
    /* killed by a signal part way */
    snprintf(body, sizeof body, "cat '%s'\nkill -9 $$", sp);
    fake("killed.sh", body);
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    while (fl_video_reader_frame(r, got, &err) == 1)
        ;
    assert_int_equal(err.code, FL_E_IO);
    assert_non_null(strstr(err.msg, "signal 9"));
    fl_video_reader_close(r);
    unsetenv("FIFOLAB_FFMPEG");
}

/* Output that is not what was asked for: FL_E_FORMAT. Open fails on the first frame's
 * header; later frames fail at their turn. */
static void test_fake_bad_output(void **state)
{
    (void)state;
    make_input();
    char sp[300], body[600];
    in_dir(sp, sizeof sp, "bad.ppm");
    snprintf(body, sizeof body, "cat '%s'", sp);
    fake("bad.sh", body);
    fl_video_reader *r = (fl_video_reader *)&r;
    fl_error err;
    static const struct {
        const char *bytes;
        const char *says;
    } heads[] = {
        { "hello world", "something other than a PPM image" },
        { "P5\n2 2\n255\n", "something other than a PPM image" },
        { "P6\n2 2\n65535\n", "malformed PPM header" },
        { "P6\n0 2\n255\n", "malformed PPM header" },
        { "P6\nx 2\n255\n", "malformed PPM header" },
        { "P6\n20000 1\n255\n", "16384" },
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        put_bytes(sp, heads[i].bytes, strlen(heads[i].bytes));
        fl_status st = fl_video_reader_open(input, 0, 0, NULL, &r, &err);
        if (st != FL_E_FORMAT)
            fail_msg("%s: status %d (%s)", heads[i].bytes, (int)st, err.msg);
        assert_null(r);
        assert_non_null(strstr(err.msg, input));
        if (!strstr(err.msg, heads[i].says))
            fail_msg("\"%s\": message \"%s\" does not say \"%s\"", heads[i].bytes, err.msg, heads[i].says);
    }
    /* a header with a comment is fine */
    static const char commented[] = "P6\n# a comment\n1 1\n255\n\x01\x02\x03";
    put_bytes(sp, commented, sizeof commented - 1);
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t px[3];
    assert_int_equal(fl_video_reader_frame(r, px, &err), 1);
    assert_int_equal(px[0], 1);
    assert_int_equal(px[2], 3);
    assert_int_equal(fl_video_reader_frame(r, px, &err), 0);
    fl_video_reader_close(r);
    /* a frame of another size after the first: FL_E_FORMAT naming both sizes, sticky */
    uint8_t s[4096];
    size_t len = ppm_stream(s, 1, 2, 2);
    len += ppm_stream(s + len, 1, 3, 2);
    put_bytes(sp, s, len);
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    uint8_t got[18];
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_int_equal(fl_video_reader_frame(r, got, &err), FL_E_FORMAT);
    assert_non_null(strstr(err.msg, input));
    assert_non_null(strstr(err.msg, "3x2 after frames of 2x2"));
    assert_int_equal(fl_video_reader_frame(r, got, &err), FL_E_FORMAT);
    fl_video_reader_close(r);
    unsetenv("FIFOLAB_FFMPEG");
}

/* No frame at all: ffmpeg's failure (exit status, its words) or "no video frames". */
static void test_fake_no_frames(void **state)
{
    (void)state;
    make_input();
    fake("fails.sh", "echo 'input.bin: Invalid data found when processing input' >&2\nexit 1");
    fl_video_reader *r = (fl_video_reader *)&r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_E_IO);
    assert_null(r);
    assert_non_null(strstr(err.msg, input));
    assert_non_null(strstr(err.msg, "not a video ffmpeg can read"));
    assert_non_null(strstr(err.msg, "exit status 1"));
    assert_non_null(strstr(err.msg, "Invalid data found"));
    fake("nothing.sh", "exit 0");
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, input));
    assert_non_null(strstr(err.msg, "no video frames"));
    unsetenv("FIFOLAB_FFMPEG");
}

/* max_frames and close stop an ffmpeg that would go on (here: forever). */
static void test_fake_stops_early(void **state)
{
    (void)state;
    make_input();
    uint8_t s[4096];
    size_t len = ppm_stream(s, 3, 2, 2);
    char sp[300], body[600];
    put_bytes(in_dir(sp, sizeof sp, "three.ppm"), s, len);
    snprintf(body, sizeof body, "cat '%s'\nexec sleep 60", sp);
    fake("endless.sh", body);
    fl_video_reader *r;
    fl_error err;
    double t0 = now_s();
    fl_video_read_opts o = { .max_frames = 2 };
    assert_int_equal(fl_video_reader_open(input, 0, 0, &o, &r, &err), FL_OK);
    uint8_t got[12];
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    for (int i = 0; i < 12; i++)
        assert_int_equal(got[i], (7 + i) & 255);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 0);
    assert_int_equal(fl_video_reader_frames(r), 2);
    fl_video_reader_close(r);
    /* close after one frame, ffmpeg still running */
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_OK);
    assert_int_equal(fl_video_reader_frame(r, got, &err), 1);
    fl_video_reader_close(r);
    double took = now_s() - t0;
    if (took > 20)
        fail_msg("stopping ffmpeg took %.1f s", took);
    fl_video_reader_close(NULL);
    unsetenv("FIFOLAB_FFMPEG");
}

/* Arguments refused before anything starts; no ffmpeg. */
static void test_bad_arguments(void **state)
{
    (void)state;
    make_input();
    fl_video_reader *r = (fl_video_reader *)&r;
    fl_error err;
    assert_int_equal(fl_video_reader_open(NULL, 0, 0, NULL, &r, &err), FL_E_INVALID);
    assert_null(r);
    assert_int_equal(fl_video_reader_open("", 0, 0, NULL, &r, &err), FL_E_INVALID);
    static const int sizes[][2] = { { 0, 3 }, { 3, 0 }, { -1, 4 }, { 4, -1 }, { 16385, 4 }, { 4, 16385 } };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_int_equal(fl_video_reader_open(input, sizes[i][0], sizes[i][1], NULL, &r, &err), FL_E_INVALID);
        assert_null(r);
        assert_non_null(strstr(err.msg, input));
    }
    fl_video_read_opts neg = { .max_frames = -1 };
    assert_int_equal(fl_video_reader_open(input, 0, 0, &neg, &r, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "max_frames"));
    fl_video_read_opts flags = { .scale_flags = "area:x=1" };
    assert_int_equal(fl_video_reader_open(input, 4, 4, &flags, &r, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "area:x=1"));
    /* no ffmpeg */
    setenv("FIFOLAB_FFMPEG", "/nonexistent/ffmpeg", 1);
    assert_int_equal(fl_video_reader_open(input, 0, 0, NULL, &r, &err), FL_E_UNSUPPORTED);
    assert_null(r);
    assert_non_null(strstr(err.msg, "ffmpeg not found"));
    assert_non_null(strstr(err.msg, "/nonexistent/ffmpeg"));
    unsetenv("FIFOLAB_FFMPEG");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lossless_own_size),
        cmocka_unit_test(test_lossless_scaled),
        cmocka_unit_test(test_max_frames),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_fake_protocol),
        cmocka_unit_test(test_fake_cut_short),
        cmocka_unit_test(test_fake_fails_late),
        cmocka_unit_test(test_fake_bad_output),
        cmocka_unit_test(test_fake_no_frames),
        cmocka_unit_test(test_fake_stops_early),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
