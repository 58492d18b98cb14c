/* The procedural video generator (data/procgen.h): sprites on simple backgrounds,
 * simulated frame by frame and drawn with 4x4 supersampling, captioned per segment. */
#include "data/procgen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define TWO_PI 6.283185307179586476925286766559
#define MAX_SIDE 512
#define MAX_COUNT 100000
#define MAX_BYTES (UINT64_C(4) << 30)
#define SUPER 4 /* subsamples per pixel side: smooth edges, so clips can blend */

static const char *const shape_names[FL_PROCGEN_SHAPES] = { "circle", "square", "triangle", "ring" };
static const char *const color_names[FL_PROCGEN_COLORS] = { "red",     "green", "blue",   "yellow",
                                                            "magenta", "cyan",  "orange", "purple" };
static const uint8_t color_rgb[FL_PROCGEN_COLORS][3] = {
    { 220, 40, 40 },  { 40, 190, 60 },  { 40, 80, 230 },  { 230, 210, 40 },
    { 210, 50, 210 }, { 40, 200, 210 }, { 240, 130, 30 }, { 130, 60, 220 },
};
static const char *const motion_names[FL_PROCGEN_MOTIONS] = {
    "moving left", "moving right", "moving up", "moving down", "bouncing", "spinning"
};
enum { M_LEFT, M_RIGHT, M_UP, M_DOWN, M_BOUNCE, M_SPIN };

const char *fl_procgen_shape_name(int i) { return i >= 0 && i < FL_PROCGEN_SHAPES ? shape_names[i] : "?"; }
const char *fl_procgen_color_name(int i) { return i >= 0 && i < FL_PROCGEN_COLORS ? color_names[i] : "?"; }
const char *fl_procgen_motion_name(int i) { return i >= 0 && i < FL_PROCGEN_MOTIONS ? motion_names[i] : "?"; }

void fl_procgen_color_rgb(int i, uint8_t rgb[3])
{
    for (int c = 0; c < 3; c++)
        rgb[c] = i >= 0 && i < FL_PROCGEN_COLORS ? color_rgb[i][c] : 0;
}

void fl_procgen_opts_default(fl_procgen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->height = o->width = 32;
    o->window = 16;
    o->videos = 24;
    o->frames = 160;
    o->segment = 32;
    o->shapes = 4;
    o->colors = 6;
    o->texture = 0;
}

static fl_status check_int(const char *key, int v, int lo, int hi, fl_error *err)
{
    if (v < lo || v > hi)
        return fl_error_set(err, FL_E_INVALID, "procgen.%s: expected %d..%d, got %d", key, lo, hi, v);
    return FL_OK;
}

static fl_status check_opts(const fl_procgen_opts *o, fl_error *err)
{
    fl_status st;
    if ((st = check_int("height", o->height, 8, MAX_SIDE, err)) ||
        (st = check_int("width", o->width, 8, MAX_SIDE, err)) ||
        (st = check_int("videos", o->videos, 1, MAX_COUNT, err)) ||
        (st = check_int("frames", o->frames, 1, MAX_COUNT, err)) ||
        (st = check_int("window", o->window, 1, o->frames < FL_CLIPS_MAX_WINDOW ? o->frames : FL_CLIPS_MAX_WINDOW, err)) ||
        (st = check_int("segment", o->segment, 1, MAX_COUNT, err)) ||
        (st = check_int("shapes", o->shapes, 1, FL_PROCGEN_SHAPES, err)) ||
        (st = check_int("colors", o->colors, 1, FL_PROCGEN_COLORS, err)) ||
        (st = check_int("texture", o->texture, 0, 1, err)))
        return st;
    uint64_t bytes = (uint64_t)o->videos * (uint64_t)o->frames * (uint64_t)o->height *
                     (uint64_t)o->width * 3;
    if (bytes > MAX_BYTES)
        return fl_error_set(err, FL_E_RANGE,
                            "procgen: %d videos of %d frames of %dx%d are %.1f GiB, over the 4 GiB limit",
                            o->videos, o->frames, o->height, o->width, (double)bytes / (1 << 30));
    return FL_OK;
}

/* One sprite's state; positions in pixels (pixel centres at +0.5), y down. */
typedef struct sprite {
    int shape, color;
    double r, x, y, angle, vx, vy, omega;
} sprite;

/* Uniforms of one address, in [0, 1). */
static void uniforms(const fl_rng *rng, uint32_t video, uint32_t step, int n, float *u)
{
    fl_rng_addr a = { FL_RNG_STREAM_MODEL, video, step };
    fl_rng_uniform(rng, a, 0, (size_t)n, u);
}

/* Whether local point (u, v), in units of the radius, is inside the shape. */
static int inside(int shape, double u, double v)
{
    double r2 = u * u + v * v;
    switch (shape) {
    case 0:
        return r2 <= 1.0;
    case 1:
        return fabs(u) <= 0.8 && fabs(v) <= 0.8;
    case 2: /* equilateral, circumradius 1, a vertex at v = -1 (up on screen) */
        return v <= 0.5 && 1.7320508075688772 * u - v <= 1.0 && -1.7320508075688772 * u - v <= 1.0;
    default: /* ring: a hole of radius sqrt(0.3) so the shape differs from a disc at any angle */
        return r2 <= 1.0 && r2 >= 0.3;
    }
}

static double wrap(double d, double n)
{
    return d - n * floor(d / n + 0.5);
}

/* Draws the sprite over the (already drawn) background of frame px [H, W, 3]. The plane is
 * periodic, so a sprite moving off one side comes in on the other. */
static void draw_sprite(const sprite *s, int H, int W, int texture, uint8_t *px)
{
    double ca = cos(s->angle), sa = sin(s->angle), inv = 1.0 / s->r;
    const uint8_t *rgb = color_rgb[s->color];
    for (int py = 0; py < H; py++) {
        double cy = wrap(py + 0.5 - s->y, H);
        if (fabs(cy) > s->r + 1.0)
            continue;
        for (int pxi = 0; pxi < W; pxi++) {
            double cx = wrap(pxi + 0.5 - s->x, W);
            if (fabs(cx) > s->r + 1.0)
                continue;
            double cover = 0.0, shade = 0.0;
            for (int sy = 0; sy < SUPER; sy++)
                for (int sx = 0; sx < SUPER; sx++) {
                    double dx = cx + (sx + 0.5) / SUPER - 0.5, dy = cy + (sy + 0.5) / SUPER - 0.5;
                    double u = (dx * ca + dy * sa) * inv, v = (-dx * sa + dy * ca) * inv;
                    if (!inside(s->shape, u, v))
                        continue;
                    cover += 1.0;
                    /* stripes across the sprite's own axis, half a radius wide */
                    shade += texture && ((int)floor((u + 4.0) * 2.0) & 1) ? 0.55 : 1.0;
                }
            if (cover == 0.0)
                continue;
            double a = cover / (SUPER * SUPER), k = shade / cover;
            uint8_t *p = px + ((size_t)py * W + pxi) * 3;
            for (int c = 0; c < 3; c++)
                p[c] = (uint8_t)lround((1.0 - a) * p[c] + a * k * rgb[c]);
        }
    }
}

/* Grey backgrounds (equal channels), so a sprite's colour is the only saturated content:
 * 0 flat, 1 a vertical gradient, 2 a checkerboard of 8-pixel squares. */
static void draw_background(int kind, double level, double contrast, int H, int W, uint8_t *px)
{
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double g = level;
            if (kind == 1)
                g += contrast * 2.0 * y / (H - 1);
            else if (kind == 2)
                g += (((x / 8) + (y / 8)) & 1) ? contrast : 0.0;
            uint8_t b = (uint8_t)lround(g);
            uint8_t *p = px + ((size_t)y * W + x) * 3;
            p[0] = p[1] = p[2] = b;
        }
}

/* Sets the velocity for a new segment's motion (the position and angle carry over). */
static void start_segment(sprite *s, int motion, const float *u)
{
    double speed = 0.6 + 0.6 * u[1];
    s->vx = s->vy = s->omega = 0.0;
    switch (motion) {
    case M_LEFT: s->vx = -speed; break;
    case M_RIGHT: s->vx = speed; break;
    case M_UP: s->vy = -speed; break;
    case M_DOWN: s->vy = speed; break;
    case M_BOUNCE: {
        /* a diagonal: 20..70 degrees off the axes in one of four quadrants */
        double th = (20.0 + 50.0 * u[2]) * TWO_PI / 360.0 + TWO_PI / 4.0 * floor(4.0 * u[3]);
        s->vx = (speed + 0.3) * cos(th);
        s->vy = (speed + 0.3) * sin(th);
        break;
    }
    default: s->omega = (u[3] < 0.5 ? -1.0 : 1.0) * (0.08 + 0.12 * u[2]); break;
    }
}

static void advance(sprite *s, int motion, int H, int W)
{
    s->x += s->vx;
    s->y += s->vy;
    s->angle += s->omega;
    if (motion == M_BOUNCE) {
        if ((s->x < s->r && s->vx < 0) || (s->x > W - s->r && s->vx > 0))
            s->vx = -s->vx;
        if ((s->y < s->r && s->vy < 0) || (s->y > H - s->r && s->vy > 0))
            s->vy = -s->vy;
    }
    s->x -= W * floor(s->x / W);
    s->y -= H * floor(s->y / H);
}

fl_status fl_procgen_make(const fl_procgen_opts *o, fl_clips **out, fl_error *err)
{
    *out = NULL;
    fl_status st = check_opts(o, err);
    if (st)
        return st;
    int H = o->height, W = o->width, ncap = o->shapes * o->colors * FL_PROCGEN_MOTIONS;
    int64_t T = (int64_t)o->videos * o->frames;
    int64_t N = (int64_t)o->videos * (o->frames - o->window + 1);
    fl_clips *c;
    if ((st = fl_clips_alloc(o->window, H, W, T, o->videos, N, ncap, &c, err)))
        return st;
    c->seed = o->seed;
    char gen[256];
    snprintf(gen, sizeof gen,
             "procgen seed=%llu size=%dx%d window=%d videos=%d frames=%d segment=%d shapes=%d "
             "colors=%d texture=%d",
             (unsigned long long)o->seed, H, W, o->window, o->videos, o->frames, o->segment,
             o->shapes, o->colors, o->texture);
    c->generator = strdup(gen);
    if (!c->generator)
        goto nomem;
    for (int sh = 0; sh < o->shapes; sh++)
        for (int co = 0; co < o->colors; co++)
            for (int m = 0; m < FL_PROCGEN_MOTIONS; m++) {
                char text[96];
                snprintf(text, sizeof text, "a %s %s %s", color_names[co], shape_names[sh],
                         motion_names[m]);
                int id = (sh * o->colors + co) * FL_PROCGEN_MOTIONS + m;
                if (!(c->captions[id] = strdup(text)))
                    goto nomem;
            }
    fl_rng rng;
    fl_rng_init(&rng, o->seed);
    size_t fbytes = (size_t)H * W * 3;
    for (int v = 0; v < o->videos; v++) {
        float u[8];
        uniforms(&rng, (uint32_t)v, 0, 8, u);
        sprite s = { 0 };
        s.shape = v % o->shapes;
        s.color = (v / o->shapes) % o->colors;
        s.r = (H < W ? H : W) * (0.17 + 0.07 * u[0]);
        s.x = W * u[1];
        s.y = H * u[2];
        s.angle = TWO_PI * u[3];
        int bg_kind = (int)(3.0f * u[4]);
        double bg_level = 20.0 + 30.0 * u[5], bg_contrast = 12.0 + 16.0 * u[6];
        int64_t first = (int64_t)v * o->frames;
        c->video_first[v] = first;
        c->video_len[v] = o->frames;
        int motion = 0;
        for (int t = 0; t < o->frames; t++) {
            if (t % o->segment == 0) {
                float su[4];
                uniforms(&rng, (uint32_t)v, 1u + (uint32_t)(t / o->segment), 4, su);
                motion = (int)(FL_PROCGEN_MOTIONS * su[0]);
                if (motion >= FL_PROCGEN_MOTIONS)
                    motion = FL_PROCGEN_MOTIONS - 1;
                start_segment(&s, motion, su);
            }
            uint8_t *px = c->frames + (size_t)(first + t) * fbytes;
            draw_background(bg_kind, bg_level, bg_contrast, H, W, px);
            draw_sprite(&s, H, W, o->texture, px);
            c->frame_caption[first + t] = (s.shape * o->colors + s.color) * FL_PROCGEN_MOTIONS + motion;
            advance(&s, motion, H, W);
        }
    }
    fl_clips_fill_offsets(c);
    *out = c;
    return FL_OK;
nomem:
    fl_clips_free(c);
    return fl_error_set(err, FL_E_NOMEM, "procgen: out of memory");
}
