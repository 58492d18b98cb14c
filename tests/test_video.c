/* cmocka suite for data/colour and data/video: the documented colour maps, the exact bytes
 * piped to ffmpeg (through a fake ffmpeg named by FIFOLAB_FFMPEG), and the writer's error
 * paths: ffmpeg missing, ffmpeg failing early and late, bad outputs, no SIGPIPE death. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/colour.h"
#include "data/video.h"

static char dir[256];

/* A fake ffmpeg: a shell script in the test directory, made executable. */
static const char *script(const char *name, const char *body)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0755);
    return path;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) ? -1 : (long)sb.st_size;
}

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/fl_test_video_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- colour maps ------------------------------------------------------------------------ */

static void test_latent_bytes(void **state)
{
    (void)state;
    assert_int_equal(fl_colour_latent_byte(-3.0f), 0);
    assert_int_equal(fl_colour_latent_byte(0.0f), 128);
    assert_int_equal(fl_colour_latent_byte(3.0f), 255);
    assert_int_equal(fl_colour_latent_byte(1.0f), 170);  /* 127.5 + 42.5 */
    assert_int_equal(fl_colour_latent_byte(-1.0f), 85);
    assert_int_equal(fl_colour_latent_byte(-10.0f), 0);  /* saturates */
    assert_int_equal(fl_colour_latent_byte(10.0f), 255);
    assert_int_equal(fl_colour_latent_byte(INFINITY), 255);
    assert_int_equal(fl_colour_latent_byte(-INFINITY), 0);
    assert_int_equal(fl_colour_latent_byte(NAN), 0);
    for (int i = -400; i < 400; i++) /* monotone */
        assert_true(fl_colour_latent_byte(i / 100.0f) <= fl_colour_latent_byte((i + 1) / 100.0f));
}

static void test_pixel_bytes(void **state)
{
    (void)state;
    assert_int_equal(fl_colour_pixel_byte(-1.0f), 0);
    assert_int_equal(fl_colour_pixel_byte(0.0f), 128);
    assert_int_equal(fl_colour_pixel_byte(1.0f), 255);
    assert_int_equal(fl_colour_pixel_byte(0.5f), 191); /* 191.25 + 0.5 */
    assert_int_equal(fl_colour_pixel_byte(-2.0f), 0);
    assert_int_equal(fl_colour_pixel_byte(2.0f), 255);
    assert_int_equal(fl_colour_pixel_byte(NAN), 0);
}

static void test_channels(void **state)
{
    (void)state;
    uint8_t rgb[3 * 2];
    fl_error err;
    /* C = 1: grey */
    float g[2] = { 1.0f, -3.0f };
    assert_int_equal(fl_colour_frame(g, 1, 1, 2, FL_COLOUR_LATENT, rgb, &err), FL_OK);
    const uint8_t want1[6] = { 170, 170, 170, 0, 0, 0 };
    assert_memory_equal(rgb, want1, 6);
    /* C = 2: R = x0, G = x1, B = (x0 + x1)/sqrt 2 */
    float two[4] = { 1.0f, 0.0f, /* channel 1: */ 1.0f, -3.0f };
    assert_int_equal(fl_colour_frame(two, 2, 1, 2, FL_COLOUR_LATENT, rgb, &err), FL_OK);
    assert_int_equal(rgb[0], 170);
    assert_int_equal(rgb[1], 170);
    assert_int_equal(rgb[2], fl_colour_latent_byte((float)(2.0 / sqrt(2.0))));
    assert_int_equal(rgb[3], 128);
    assert_int_equal(rgb[4], 0);
    assert_int_equal(rgb[5], fl_colour_latent_byte((float)(-3.0 / sqrt(2.0))));
    /* C = 3: the identity, channel c to colour c, channels first in, pixels interleaved out */
    float three[6] = { -3, 3, 0, 1, 3, -1 };
    assert_int_equal(fl_colour_frame(three, 3, 1, 2, FL_COLOUR_LATENT, rgb, &err), FL_OK);
    const uint8_t want3[6] = { 0, 128, 255, 255, 170, 85 };
    assert_memory_equal(rgb, want3, 6);
    /* C = 4: R = (x0 + x3)/sqrt 2, G = x1, B = x2 */
    float four[4] = { 1, 0, -1, 1 };
    assert_int_equal(fl_colour_frame(four, 4, 1, 1, FL_COLOUR_LATENT, rgb, &err), FL_OK);
    assert_int_equal(rgb[0], fl_colour_latent_byte((float)sqrt(2.0)));
    assert_int_equal(rgb[1], 128);
    assert_int_equal(rgb[2], 85);
    /* C = 7: R over channels 0, 3, 6 (/sqrt 3), G over 1, 4, B over 2, 5 (/sqrt 2) */
    float seven[7] = { 1, 1, 1, 1, 1, 1, 1 };
    assert_int_equal(fl_colour_frame(seven, 7, 1, 1, FL_COLOUR_LATENT, rgb, &err), FL_OK);
    assert_int_equal(rgb[0], fl_colour_latent_byte((float)(3.0 / sqrt(3.0))));
    assert_int_equal(rgb[1], fl_colour_latent_byte((float)(2.0 / sqrt(2.0))));
    assert_int_equal(rgb[2], fl_colour_latent_byte((float)(2.0 / sqrt(2.0))));
    /* pixels: C = 3 byte per channel; C = 2 is refused */
    float px[3] = { -1, 0, 1 };
    assert_int_equal(fl_colour_frame(px, 3, 1, 1, FL_COLOUR_PIXELS, rgb, &err), FL_OK);
    const uint8_t wantp[3] = { 0, 128, 255 };
    assert_memory_equal(rgb, wantp, 3);
    assert_int_equal(fl_colour_frame(px, 2, 1, 1, FL_COLOUR_PIXELS, rgb, &err), FL_E_SHAPE);
    assert_non_null(strstr(err.msg, "1 or 3 channels"));
    assert_int_equal(fl_colour_frame(px, 0, 1, 1, FL_COLOUR_LATENT, rgb, &err), FL_E_SHAPE);
    assert_int_equal(fl_colour_space_parse("pixels"), FL_COLOUR_PIXELS);
    assert_int_equal(fl_colour_space_parse("latent"), FL_COLOUR_LATENT);
    assert_int_equal(fl_colour_space_parse("rgb"), -1);
}

/* ---- the writer through fake ffmpegs ----------------------------------------------------- */

/* Copies its input to the output named last (without ffmpeg's "file:" prefix). */
#define FAKE_CAT "for a; do last=$a; done\nexec cat > \"${last#file:}\""

static void test_bytes_piped(void **state)
{
    (void)state;
    setenv("FIFOLAB_FFMPEG", script("cat.sh", FAKE_CAT), 1);
    char mp4[300], gif[300];
    snprintf(mp4, sizeof mp4, "%s/out.mp4", dir);
    snprintf(gif, sizeof gif, "%s/out.gif", dir);
    fl_video_opts o = { .mp4 = mp4, .gif = gif, .fps = 5, .scale = 3 };
    fl_video *v;
    fl_error err;
    enum { H = 3, W = 5, N = 7 };
    assert_int_equal(fl_video_open(&v, &o, H, W, &err), FL_OK);
    float frame[3 * H * W];
    for (int t = 0; t < N; t++) {
        for (int i = 0; i < 3 * H * W; i++)
            frame[i] = (float)((i + t) % 7 - 3);
        assert_int_equal(fl_video_frame_f32(v, frame, 3, FL_COLOUR_LATENT, &err), FL_OK);
    }
    assert_int_equal(fl_video_frames(v), N);
    assert_int_equal(fl_video_close(v, &err), FL_OK);
    /* what went down the pipe: N frames of H x W RGB (ffmpeg does the scaling) */
    assert_int_equal(file_size(mp4), N * H * W * 3);
    assert_int_equal(file_size(gif), N * H * W * 3);
    FILE *f = fopen(mp4, "rb");
    assert_non_null(f);
    uint8_t got[H * W * 3], want[H * W * 3];
    fseek(f, (long)(N - 1) * H * W * 3, SEEK_SET);
    assert_int_equal(fread(got, 1, sizeof got, f), sizeof got);
    fclose(f);
    for (int i = 0; i < 3 * H * W; i++)
        frame[i] = (float)((i + N - 1) % 7 - 3);
    assert_int_equal(fl_colour_frame(frame, 3, H, W, FL_COLOUR_LATENT, want, &err), FL_OK);
    assert_memory_equal(got, want, sizeof want);
    unsetenv("FIFOLAB_FFMPEG");
}

static void test_missing_ffmpeg(void **state)
{
    (void)state;
    char path_save[4096];
    const char *p = getenv("PATH");
    snprintf(path_save, sizeof path_save, "%s", p ? p : "");
    char out[300];
    snprintf(out, sizeof out, "%s/m.mp4", dir);
    fl_video_opts o = { .mp4 = out };
    fl_video *v = (fl_video *)&o;
    fl_error err;
    setenv("PATH", dir, 1); /* no ffmpeg there */
    unsetenv("FIFOLAB_FFMPEG");
    assert_int_equal(fl_video_open(&v, &o, 4, 4, &err), FL_E_UNSUPPORTED);
    assert_null(v);
    assert_string_equal(err.msg, "ffmpeg not found: install Debian's ffmpeg package (apt-get install ffmpeg)");
    setenv("PATH", path_save, 1);
    setenv("FIFOLAB_FFMPEG", "/nonexistent/ffmpeg", 1);
    assert_int_equal(fl_video_open(&v, &o, 4, 4, &err), FL_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "FIFOLAB_FFMPEG=/nonexistent/ffmpeg"));
    /* a file that is not executable is not a program */
    char plain[300];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    FILE *f = fopen(plain, "w");
    fclose(f);
    setenv("FIFOLAB_FFMPEG", plain, 1);
    assert_int_equal(fl_video_open(&v, &o, 4, 4, &err), FL_E_UNSUPPORTED);
    unsetenv("FIFOLAB_FFMPEG");
}

/* ffmpeg dies at once: frames larger than a pipe's buffer must meet EPIPE, not SIGPIPE
 * (which would kill this test), and the error gives the exit status and its last line. */
static void test_ffmpeg_fails_early(void **state)
{
    (void)state;
    setenv("FIFOLAB_FFMPEG", script("fail.sh", "echo 'first line' >&2\necho 'boom: bad encoder' >&2\nexit 1"), 1);
    char out[300];
    snprintf(out, sizeof out, "%s/early.mp4", dir);
    fl_video_opts o = { .mp4 = out };
    fl_video *v;
    fl_error err;
    enum { H = 256, W = 256 };
    assert_int_equal(fl_video_open(&v, &o, H, W, &err), FL_OK);
    uint8_t *rgb = calloc(H * W * 3, 1);
    assert_non_null(rgb);
    fl_status st = FL_OK;
    for (int t = 0; t < 4 && !st; t++)
        st = fl_video_frame(v, rgb, &err);
    assert_int_equal(st, FL_E_IO);
    assert_non_null(strstr(err.msg, out));
    assert_non_null(strstr(err.msg, "broken pipe"));
    assert_non_null(strstr(err.msg, "exit status 1"));
    assert_non_null(strstr(err.msg, "first line | boom: bad encoder"));
    /* sticky: the next frame says the same */
    fl_error again;
    assert_int_equal(fl_video_frame(v, rgb, &again), FL_E_IO);
    assert_string_equal(again.msg, err.msg);
    fl_video_discard(v);
    free(rgb);
    unsetenv("FIFOLAB_FFMPEG");
}

/* ffmpeg reads everything, then fails: the error comes from fl_video_close. */
static void test_ffmpeg_fails_late(void **state)
{
    (void)state;
    setenv("FIFOLAB_FFMPEG", script("late.sh", "cat > /dev/null\necho 'x264: cannot encode' >&2\nexit 3"), 1);
    char out[300];
    snprintf(out, sizeof out, "%s/late.gif", dir);
    fl_video_opts o = { .gif = out };
    fl_video *v;
    fl_error err;
    assert_int_equal(fl_video_open(&v, &o, 2, 2, &err), FL_OK);
    uint8_t rgb[12] = { 0 };
    assert_int_equal(fl_video_frame(v, rgb, &err), FL_OK);
    assert_int_equal(fl_video_close(v, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, out));
    assert_non_null(strstr(err.msg, "(GIF)"));
    assert_non_null(strstr(err.msg, "exit status 3"));
    assert_non_null(strstr(err.msg, "x264: cannot encode"));
    /* killed by a signal */
    setenv("FIFOLAB_FFMPEG", script("kill.sh", "cat > /dev/null\nkill -9 $$"), 1);
    assert_int_equal(fl_video_open(&v, &o, 2, 2, &err), FL_OK);
    assert_int_equal(fl_video_frame(v, rgb, &err), FL_OK);
    assert_int_equal(fl_video_close(v, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "killed by signal 9"));
    unsetenv("FIFOLAB_FFMPEG");
}

static void test_bad_outputs(void **state)
{
    (void)state;
    setenv("FIFOLAB_FFMPEG", script("cat2.sh", FAKE_CAT), 1);
    fl_video *v;
    fl_error err;
    fl_video_opts o = { .mp4 = "/nonexistent/dir/x.mp4" };
    assert_int_equal(fl_video_open(&v, &o, 4, 4, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.mp4"));
    assert_non_null(strstr(err.msg, "No such file or directory"));
    fl_video_opts d = { .gif = dir }; /* a directory */
    assert_int_equal(fl_video_open(&v, &d, 4, 4, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "is a directory"));
    fl_video_opts none = { 0 };
    assert_int_equal(fl_video_open(&v, &none, 4, 4, &err), FL_E_INVALID);
    char out[300];
    snprintf(out, sizeof out, "%s/o.mp4", dir);
    fl_video_opts fast = { .mp4 = out, .fps = 1000 };
    assert_int_equal(fl_video_open(&v, &fast, 4, 4, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "fps 1000"));
    fl_video_opts big = { .mp4 = out, .scale = 65 };
    assert_int_equal(fl_video_open(&v, &big, 4, 4, &err), FL_E_INVALID);
    fl_video_opts ok = { .mp4 = out };
    assert_int_equal(fl_video_open(&v, &ok, 0, 4, &err), FL_E_INVALID);
    /* a PNG directory whose parent is a file */
    char png[300];
    snprintf(png, sizeof png, "%s/cat2.sh/frames", dir);
    fl_video_opts p = { .png_dir = png };
    assert_int_equal(fl_video_open(&v, &p, 4, 4, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "cat2.sh"));
    /* zero frames: nothing to write */
    assert_int_equal(fl_video_open(&v, &ok, 4, 4, &err), FL_OK);
    assert_int_equal(fl_video_close(v, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "no frames"));
    assert_int_equal(fl_video_close(NULL, &err), FL_OK);
    fl_video_discard(NULL);
    unsetenv("FIFOLAB_FFMPEG");
}

/* discard stops a process that would otherwise wait for input forever */
static void test_discard(void **state)
{
    (void)state;
    setenv("FIFOLAB_FFMPEG", script("hang.sh", "trap '' PIPE\nwhile :; do sleep 1; done"), 1);
    char out[300];
    snprintf(out, sizeof out, "%s/h.mp4", dir);
    fl_video_opts o = { .mp4 = out };
    fl_video *v;
    fl_error err;
    assert_int_equal(fl_video_open(&v, &o, 2, 2, &err), FL_OK);
    uint8_t rgb[12] = { 0 };
    assert_int_equal(fl_video_frame(v, rgb, &err), FL_OK);
    fl_video_discard(v); /* returns: the process was stopped and reaped */
    unsetenv("FIFOLAB_FFMPEG");
}

/* The real ffmpeg, when installed: an odd-sized MP4 and PNG frames. */
static void test_real_ffmpeg(void **state)
{
    (void)state;
    char prog[4096];
    fl_error err;
    unsetenv("FIFOLAB_FFMPEG");
    if (fl_video_find_ffmpeg(prog, sizeof prog, &err)) {
        print_message("(%s: skipped)\n", err.msg);
        skip();
    }
    char mp4[300], png[300], first[340];
    snprintf(mp4, sizeof mp4, "%s/real.mp4", dir);
    snprintf(png, sizeof png, "%s/png", dir);
    fl_video_opts o = { .mp4 = mp4, .png_dir = png, .fps = 12, .scale = 1 };
    fl_video *v;
    enum { H = 7, W = 9, N = 5 };
    assert_int_equal(fl_video_open(&v, &o, H, W, &err), FL_OK);
    float frame[H * W];
    for (int t = 0; t < N; t++) {
        for (int i = 0; i < H * W; i++)
            frame[i] = (float)sin(0.3 * i + t);
        assert_int_equal(fl_video_frame_f32(v, frame, 1, FL_COLOUR_LATENT, &err), FL_OK);
    }
    fl_status st = fl_video_close(v, &err);
    if (st)
        fail_msg("%s", err.msg);
    assert_true(file_size(mp4) > 0);
    snprintf(first, sizeof first, "%s/frame_000000.png", png);
    assert_true(file_size(first) > 0);
    snprintf(first, sizeof first, "%s/frame_%06d.png", png, N - 1);
    assert_true(file_size(first) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latent_bytes),
        cmocka_unit_test(test_pixel_bytes),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_bytes_piped),
        cmocka_unit_test(test_missing_ffmpeg),
        cmocka_unit_test(test_ffmpeg_fails_early),
        cmocka_unit_test(test_ffmpeg_fails_late),
        cmocka_unit_test(test_bad_outputs),
        cmocka_unit_test(test_discard),
        cmocka_unit_test(test_real_ffmpeg),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
