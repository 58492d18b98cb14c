/* cmocka suite for data/procgen and data/clips: determinism, captions against what the
 * pixels show (colour, shape, motion measured independently), the clip table, the HDF5
 * round trip and the errors that name the input at fault. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/clips.h"
#include "data/procgen.h"

static void expect_ok(fl_status st, const fl_error *err, const char *what)
{
    if (st != FL_OK)
        fail_msg("%s: status %d: %s", what, (int)st, fl_error_msg(err));
}

static fl_clips *make(const fl_procgen_opts *o)
{
    fl_clips *c = NULL;
    fl_error err;
    expect_ok(fl_procgen_make(o, &c, &err), &err, "fl_procgen_make");
    return c;
}

/* ---- what a frame shows, measured from its pixels ---------------------------------- */

typedef struct seen {
    int color;            /* nearest palette colour of the saturated pixels, -1: none */
    int shape;            /* 0 circle, 1 square, 2 triangle, 3 ring; -1: not measurable */
    double cx, cy;        /* centroid of the sprite mask */
    int touches;          /* the mask reaches the border (wrapped: centroid meaningless) */
} seen;

static int sat_of(const uint8_t *p)
{
    int mx = p[0], mn = p[0];
    for (int c = 1; c < 3; c++) {
        mx = p[c] > mx ? p[c] : mx;
        mn = p[c] < mn ? p[c] : mn;
    }
    return mx - mn;
}

/* The backgrounds are grey, so saturation marks the sprite. Colour: the chroma direction
 * (rgb - min) / (max - min) averaged over strongly saturated pixels, nearest palette entry.
 * Shape: area / (largest centre distance)^2 is rotation-invariant (circle ~pi, square ~2,
 * triangle ~1.3), and a ring has a hole at its centroid. */
static seen look(const uint8_t *px, int H, int W, int ncolors)
{
    seen s = { -1, -1, 0, 0, 0 };
    double chroma[3] = { 0, 0, 0 };
    int nsat = 0;
    for (int i = 0; i < H * W; i++) {
        const uint8_t *p = px + 3 * i;
        int sat = sat_of(p);
        if (sat < 90)
            continue;
        int mn = p[0] < p[1] ? (p[0] < p[2] ? p[0] : p[2]) : (p[1] < p[2] ? p[1] : p[2]);
        for (int c = 0; c < 3; c++)
            chroma[c] += (double)(p[c] - mn) / sat;
        nsat++;
    }
    if (nsat == 0)
        return s;
    double best = 1e9;
    for (int k = 0; k < ncolors; k++) {
        uint8_t rgb[3];
        fl_procgen_color_rgb(k, rgb);
        int mx = rgb[0], mn = rgb[0];
        for (int c = 1; c < 3; c++) {
            mx = rgb[c] > mx ? rgb[c] : mx;
            mn = rgb[c] < mn ? rgb[c] : mn;
        }
        double d = 0;
        for (int c = 0; c < 3; c++) {
            double v = chroma[c] / nsat - (double)(rgb[c] - mn) / (mx - mn);
            d += v * v;
        }
        if (d < best) {
            best = d;
            s.color = k;
        }
    }
    uint8_t ref[3];
    fl_procgen_color_rgb(s.color, ref);
    int thr = sat_of(ref) / 2;
    double area = 0, sx = 0, sy = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (sat_of(px + 3 * (y * W + x)) > thr) {
                area += 1;
                sx += x + 0.5;
                sy += y + 0.5;
                if (x == 0 || y == 0 || x == W - 1 || y == H - 1)
                    s.touches = 1;
            }
    if (area == 0)
        return s;
    s.cx = sx / area;
    s.cy = sy / area;
    if (s.touches)
        return s;
    double r2 = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (sat_of(px + 3 * (y * W + x)) > thr) {
                double dx = x + 0.5 - s.cx, dy = y + 0.5 - s.cy;
                r2 = dx * dx + dy * dy > r2 ? dx * dx + dy * dy : r2;
            }
    int hx = (int)s.cx, hy = (int)s.cy;
    if (sat_of(px + 3 * (hy * W + hx)) <= thr)
        s.shape = 3;
    else {
        double ratio = area / r2;
        s.shape = ratio < 1.95 ? 2 : ratio < 2.75 ? 1 : 0;
    }
    return s;
}

/* caption id -> (shape, colour, motion) as procgen.h defines the ids */
static void parts(int id, int ncolors, int *shape, int *color, int *motion)
{
    *motion = id % FL_PROCGEN_MOTIONS;
    *color = (id / FL_PROCGEN_MOTIONS) % ncolors;
    *shape = id / FL_PROCGEN_MOTIONS / ncolors;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_deterministic(void **state)
{
    (void)state;
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    o.videos = 6;
    o.frames = 40;
    fl_clips *a = make(&o), *b = make(&o);
    size_t fb = (size_t)a->nframes * a->height * a->width * 3;
    assert_int_equal(a->nframes, b->nframes);
    assert_memory_equal(a->frames, b->frames, fb);
    assert_memory_equal(a->frame_caption, b->frame_caption, (size_t)a->nframes * sizeof(int32_t));
    o.seed = 2;
    fl_clips *c = make(&o);
    assert_true(memcmp(a->frames, c->frames, fb) != 0);
    /* a video does not depend on how many others are made (addressed by video index) */
    o.seed = 1;
    o.videos = 3;
    fl_clips *d = make(&o);
    assert_memory_equal(a->frames, d->frames, (size_t)d->nframes * d->height * d->width * 3);
    fl_clips_free(a);
    fl_clips_free(b);
    fl_clips_free(c);
    fl_clips_free(d);
}

static void test_captions_match_pixels(void **state)
{
    (void)state;
    for (int texture = 0; texture <= 1; texture++) {
        fl_procgen_opts o;
        fl_procgen_opts_default(&o);
        o.texture = texture;
        fl_clips *c = make(&o);
        int H = c->height, W = c->width;
        size_t fb = (size_t)H * W * 3;
        int conf[4][4] = { { 0 } };
        int64_t color_ok = 0, shape_ok = 0, shape_n = 0, motion_ok = 0, motion_n = 0;
        for (int64_t t = 0; t < c->nframes; t++) {
            int sh, co, mo;
            parts(c->frame_caption[t], o.colors, &sh, &co, &mo);
            seen s = look(c->frames + t * fb, H, W, o.colors);
            color_ok += s.color == co;
            if (s.shape >= 0) {
                conf[sh][s.shape]++;
                shape_n++;
                shape_ok += s.shape == sh;
            }
            /* motion between t and t+1 of one segment of one video, both unwrapped */
            int64_t v = t / o.frames, k = t % o.frames;
            if (k + 1 < o.frames && (k + 1) % o.segment != 0 && v == (t + 1) / o.frames) {
                seen s2 = look(c->frames + (t + 1) * fb, H, W, o.colors);
                if (!s.touches && !s2.touches && s.color >= 0 && s2.color >= 0) {
                    double dx = s2.cx - s.cx, dy = s2.cy - s.cy;
                    int ok;
                    switch (mo) {
                    case 0: ok = dx < -0.3 && fabs(dy) < 0.3; break;
                    case 1: ok = dx > 0.3 && fabs(dy) < 0.3; break;
                    case 2: ok = dy < -0.3 && fabs(dx) < 0.3; break;
                    case 3: ok = dy > 0.3 && fabs(dx) < 0.3; break;
                    case 4: ok = fabs(dx) > 0.1 && fabs(dy) > 0.1; break;
                    default: ok = fabs(dx) < 0.3 && fabs(dy) < 0.3; break;
                    }
                    motion_n++;
                    motion_ok += ok;
                }
            }
        }
        double fc = (double)color_ok / c->nframes, fs = (double)shape_ok / shape_n,
               fm = (double)motion_ok / motion_n;
        printf("texture %d: colour %.4f of %lld frames, shape %.4f of %lld, motion %.4f of %lld\n",
               texture, fc, (long long)c->nframes, fs, (long long)shape_n, fm, (long long)motion_n);
        for (int a = 0; a < 4; a++)
            printf("  shape %d seen as: %d %d %d %d\n", a, conf[a][0], conf[a][1], conf[a][2], conf[a][3]);
        assert_true(fc == 1.0);
        assert_true(shape_n > c->nframes / 3);
        assert_true(fs > 0.98);
        assert_true(motion_n > c->nframes / 3);
        assert_true(fm > 0.97);
        fl_clips_free(c);
    }
}

static void test_clip_table(void **state)
{
    (void)state;
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    o.videos = 5;
    o.frames = 50;
    o.window = 7;
    fl_clips *c = make(&o);
    fl_error err;
    expect_ok(fl_clips_check(c, &err), &err, "check");
    assert_int_equal(c->nclips, 5 * (50 - 7 + 1));
    assert_int_equal(c->ncaptions, o.shapes * o.colors * FL_PROCGEN_MOTIONS);
    for (int64_t i = 0; i < c->nclips; i++) {
        int64_t v = i / 44, off = i % 44;
        assert_int_equal(c->clip_first[i], v * 50 + off);
        assert_int_equal(c->clip_caption[i], c->frame_caption[c->clip_first[i] + 3]);
    }
    /* every caption names its parts */
    int sh, co, mo;
    parts(c->frame_caption[0], o.colors, &sh, &co, &mo);
    char want[128];
    snprintf(want, sizeof want, "a %s %s %s", fl_procgen_color_name(co), fl_procgen_shape_name(sh),
             fl_procgen_motion_name(mo));
    assert_string_equal(c->captions[c->frame_caption[0]], want);
    assert_int_equal(fl_clips_find_caption(c, "a red circle moving left"), 0);
    assert_int_equal(fl_clips_find_caption(c, "a red hexagon"), -1);
    /* an inconsistent table is refused, naming the entry */
    c->clip_first[3] = 50 - 3;
    fl_status st = fl_clips_check(c, &err);
    assert_int_equal(st, FL_E_FORMAT);
    assert_non_null(strstr(fl_error_msg(&err), "clip_first[3]"));
    fl_clips_free(c);
}

static void test_round_trip(void **state)
{
    (void)state;
    char dir[] = "/tmp/fl_procgen_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], bad[256];
    snprintf(path, sizeof path, "%s/clips.h5", dir);
    snprintf(bad, sizeof bad, "%s/missing.h5", dir);
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    o.videos = 4;
    o.frames = 30;
    o.height = 16;
    o.width = 24;
    fl_clips *a = make(&o), *b = NULL;
    fl_error err;
    expect_ok(fl_clips_write(a, path, &err), &err, "write");
    expect_ok(fl_clips_read(path, &b, &err), &err, "read");
    assert_int_equal(a->window, b->window);
    assert_int_equal(a->height, b->height);
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->nframes, b->nframes);
    assert_int_equal(a->nvideos, b->nvideos);
    assert_int_equal(a->nclips, b->nclips);
    assert_int_equal(a->ncaptions, b->ncaptions);
    assert_true(a->seed == b->seed);
    assert_memory_equal(a->frames, b->frames, (size_t)a->nframes * 16 * 24 * 3);
    assert_memory_equal(a->frame_caption, b->frame_caption, (size_t)a->nframes * 4);
    assert_memory_equal(a->video_first, b->video_first, (size_t)a->nvideos * 8);
    assert_memory_equal(a->video_len, b->video_len, (size_t)a->nvideos * 8);
    assert_memory_equal(a->clip_first, b->clip_first, (size_t)a->nclips * 8);
    assert_memory_equal(a->clip_caption, b->clip_caption, (size_t)a->nclips * 4);
    for (int k = 0; k < a->ncaptions; k++)
        assert_string_equal(a->captions[k], b->captions[k]);
    assert_string_equal(a->generator, b->generator);
    fl_clips_free(b);
    /* errors name the file */
    fl_status st = fl_clips_read(bad, &b, &err);
    assert_int_equal(st, FL_E_IO);
    assert_null(b);
    assert_non_null(strstr(fl_error_msg(&err), "missing.h5"));
    FILE *f = fopen(bad, "w");
    assert_non_null(f);
    fputs("not hdf5\n", f);
    fclose(f);
    st = fl_clips_read(bad, &b, &err);
    assert_int_equal(st, FL_E_IO);
    assert_non_null(strstr(fl_error_msg(&err), "missing.h5"));
    remove(bad);
    /* writing where no file can be made */
    snprintf(bad, sizeof bad, "%s/no/such/dir/clips.h5", dir);
    st = fl_clips_write(a, bad, &err);
    assert_int_equal(st, FL_E_IO);
    assert_non_null(strstr(fl_error_msg(&err), "no/such/dir"));
    fl_clips_free(a);
    remove(path);
    rmdir(dir);
}

static void test_options(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        int field; /* 0 height, 1 window, 2 videos, 3 shapes, 4 colors, 5 segment */
        int value;
    } cases[] = {
        { "procgen.height", 0, 4 }, { "procgen.window", 1, 0 },  { "procgen.window", 1, 500 },
        { "procgen.videos", 2, 0 }, { "procgen.shapes", 3, 5 }, { "procgen.colors", 4, 9 },
        { "procgen.segment", 5, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_procgen_opts o;
        fl_procgen_opts_default(&o);
        int *f[] = { &o.height, &o.window, &o.videos, &o.shapes, &o.colors, &o.segment };
        *f[cases[i].field] = cases[i].value;
        fl_clips *c = NULL;
        fl_error err;
        fl_status st = fl_procgen_make(&o, &c, &err);
        assert_int_equal(st, FL_E_INVALID);
        assert_null(c);
        if (!strstr(fl_error_msg(&err), cases[i].key))
            fail_msg("case %zu: message \"%s\" does not name %s", i, fl_error_msg(&err), cases[i].key);
    }
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    o.videos = 100000;
    o.frames = 100000;
    fl_clips *c = NULL;
    fl_error err;
    assert_int_equal(fl_procgen_make(&o, &c, &err), FL_E_RANGE);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_captions_match_pixels),
        cmocka_unit_test(test_clip_table),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
