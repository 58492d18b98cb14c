/* `fifolab export`: renders a run file's frames (/frames/pixels, else /frames/latent
 * through the documented colour map) to MP4, GIF and PNG frames with ffmpeg, streaming a
 * chunk of frames at a time (docs/video.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/cli.h"
#include "core/config.h"
#include "core/h5io.h"
#include "core/runfile.h"
#include "data/colour.h"
#include "data/video.h"

#define PATH_LEN 4200
/* Frames read per HDF5 call: large enough to amortize it, small enough that memory does
 * not grow with the run (at most this many bytes, at least one frame). */
#define CHUNK_BYTES ((size_t)16 << 20)
/* Without video.scale in the run's configuration, frames are upscaled until their longer
 * side reaches this many pixels. */
#define AUTO_SIDE 256

static void usage(FILE *f)
{
    fprintf(f, "usage: fifolab export RUN [--mp4 OUT.mp4] [--gif OUT.gif] [--png DIR] [--fps N]\n"
               "                      [--scale K] [--space latent|pixels]\n\n"
               "Renders the frames of a run file (a run directory or its run.h5) with ffmpeg:\n"
               "/frames/pixels when the run has them, else /frames/latent mapped to colours\n"
               "(docs/video.md). At least one output:\n"
               "  --mp4 FILE     H.264 MP4 (yuv420p; an odd side is padded by one black row/column)\n"
               "  --gif FILE     animated GIF (a palette per frame), looping\n"
               "  --png DIR      PNG frames DIR/frame_000000.png, ... (DIR is created)\n"
               "Options:\n"
               "  --fps N        frames per second (default: the run's video.fps, else 8)\n"
               "  --scale K      integer nearest-neighbour upscale (default: the run's video.scale,\n"
               "                 else the least K making the longer side at least %d pixels)\n"
               "  --space S      how /frames/latent maps to colours: latent (+-3 sigma to 0..255)\n"
               "                 or pixels ([-1, 1] to 0..255); default: the dataset's space\n"
               "                 attribute, else latent\n\n"
               "Works on a run being written: it exports the frames present when it starts.\n"
               "Memory stays constant however long the run. ffmpeg is the program in $PATH,\n"
               "or $FIFOLAB_FFMPEG. Exit status 1 if the run file cannot be read or ffmpeg\n"
               "fails (the message names the file), 2 on bad usage.\n",
            AUTO_SIDE);
}

/* An int option of export through the CLI's one parser; 1 ok, 0 bad (message printed). */
static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    long long v;
    if (fl_cli_int("export", opt, s, lo, hi, &v))
        return 0;
    *out = (int)v;
    return 1;
}

/* video.fps and video.scale of the run's resolved configuration (0 when absent). */
static void config_defaults(hid_t f, int *fps, int *scale)
{
    fl_error err;
    char *text = NULL;
    fl_cfg *cfg = fl_cfg_new(NULL);
    if (cfg && !fl_h5_read_text(f, "config/resolved", &text, &err) && !fl_cfg_merge_text(cfg, text, &err)) {
        const fl_cfg *n = fl_cfg_lookup(cfg, "video.fps");
        double v = n && fl_cfg_type_of(n) == FL_CFG_NUM ? fl_cfg_num_value(n) : 0;
        if (v >= 1 && v <= 240 && v == floor(v))
            *fps = (int)v;
        n = fl_cfg_lookup(cfg, "video.scale");
        v = n && fl_cfg_type_of(n) == FL_CFG_NUM ? fl_cfg_num_value(n) : 0;
        if (v >= 1 && v <= 64 && v == floor(v))
            *scale = (int)v;
    }
    free(text);
    fl_cfg_free(cfg);
}

typedef struct source {
    hid_t dset;
    int pixels;                /* /frames/pixels [N, H, W, 3] uint8 */
    int64_t n;                 /* frames present when opened */
    int C, H, W;
    fl_colour_space space;     /* /frames/latent's map */
} source;

/* Opens /frames/pixels when present, else /frames/latent, and checks its shape. */
static int open_source(hid_t f, const char *path, source *s)
{
    memset(s, 0, sizeof *s);
    s->dset = -1;
    fl_h5_lock();
    int have_frames = H5Lexists(f, "frames", H5P_DEFAULT) > 0;
    s->pixels = have_frames && H5Lexists(f, "frames/pixels", H5P_DEFAULT) > 0;
    const char *name = s->pixels ? "frames/pixels" : "frames/latent";
    if (have_frames && (s->pixels || H5Lexists(f, name, H5P_DEFAULT) > 0))
        s->dset = H5Dopen2(f, name, H5P_DEFAULT);
    hsize_t dims[4] = { 0 };
    int rank = -1;
    if (s->dset >= 0) {
        hid_t sp = H5Dget_space(s->dset);
        rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
        if (rank == 4)
            H5Sget_simple_extent_dims(sp, dims, NULL);
        if (sp >= 0)
            H5Sclose(sp);
    }
    fl_h5_unlock();
    if (s->dset < 0) {
        fprintf(stderr, "fifolab export: %s: no /frames/latent or /frames/pixels (not a fifolab run file?)\n", path);
        return 0;
    }
    int ok = rank == 4 && dims[1] > 0 && dims[2] > 0 && dims[3] > 0 && dims[1] <= 65536 && dims[2] <= 65536 &&
             dims[3] <= 65536;
    if (s->pixels) {
        s->H = (int)dims[1];
        s->W = (int)dims[2];
        s->C = (int)dims[3];
        ok = ok && s->C == 3;
    } else {
        s->C = (int)dims[1];
        s->H = (int)dims[2];
        s->W = (int)dims[3];
        char space[32] = "";
        fl_error err;
        s->space = FL_COLOUR_LATENT;
        if (!fl_h5_get_attr_str(s->dset, "space", space, sizeof space, &err) && fl_colour_space_parse(space) >= 0)
            s->space = (fl_colour_space)fl_colour_space_parse(space);
    }
    if (!ok) {
        fprintf(stderr, "fifolab export: %s: /%s has rank %d, expected %s\n", path, name, rank,
                s->pixels ? "[N, H, W, 3]" : "[N, C, H, W]");
        return 0;
    }
    s->n = fl_h5_rows(s->dset);
    return 1;
}

static int export_run(const char *run, fl_video_opts *o, int space_override)
{
    char path[PATH_LEN];
    fl_runfile_path(run, path, sizeof path);
    fl_error err;
    fl_error_clear(&err);
    int64_t fid;
    if (fl_runfile_open_read(path, &fid, &err)) {
        fprintf(stderr, "fifolab export: %s\n", fl_error_msg(&err));
        return 1;
    }
    hid_t f = (hid_t)fid;
    int rc = 1;
    source s;
    fl_video *v = NULL;
    void *buf = NULL;
    uint8_t *rgb = NULL;
    if (!open_source(f, path, &s))
        goto out;
    if (space_override >= 0)
        s.space = (fl_colour_space)space_override;
    if (s.n <= 0) {
        fprintf(stderr, "fifolab export: %s: no frames yet in /frames/%s\n", path, s.pixels ? "pixels" : "latent");
        goto out;
    }
    if (!s.pixels && s.space == FL_COLOUR_PIXELS && s.C != 1 && s.C != 3) {
        fprintf(stderr, "fifolab export: %s: --space pixels needs 1 or 3 channels, /frames/latent has %d\n", path,
                s.C);
        goto out;
    }
    int fps = 0, scale = 0;
    config_defaults(f, &fps, &scale);
    if (!o->fps)
        o->fps = fps ? fps : FL_VIDEO_DEFAULT_FPS;
    if (!o->scale) {
        int side = s.H > s.W ? s.H : s.W;
        o->scale = scale ? scale : side >= AUTO_SIDE ? 1 : (AUTO_SIDE + side - 1) / side;
        if (o->scale > 64)
            o->scale = 64;
    }
    size_t frame_bytes = (size_t)s.C * (size_t)s.H * (size_t)s.W * (s.pixels ? 1 : sizeof(float));
    int64_t chunk = (int64_t)(CHUNK_BYTES / frame_bytes);
    if (chunk < 1)
        chunk = 1;
    if (chunk > s.n)
        chunk = s.n;
    buf = malloc((size_t)chunk * frame_bytes);
    rgb = s.pixels ? NULL : malloc((size_t)s.H * (size_t)s.W * 3);
    if (!buf || (!s.pixels && !rgb)) {
        fprintf(stderr, "fifolab export: out of memory for %lld frames of %zu bytes\n", (long long)chunk, frame_bytes);
        goto out;
    }
    if (fl_video_open(&v, o, s.H, s.W, &err)) {
        fprintf(stderr, "fifolab export: %s\n", fl_error_msg(&err));
        goto out;
    }
    for (int64_t first = 0; first < s.n; first += chunk) {
        int64_t k = s.n - first < chunk ? s.n - first : chunk;
        if (fl_h5_read_rows(s.dset, s.pixels ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, first, k, buf, &err)) {
            fprintf(stderr, "fifolab export: %s: /frames/%s: %s\n", path, s.pixels ? "pixels" : "latent",
                    fl_error_msg(&err));
            goto out;
        }
        for (int64_t i = 0; i < k; i++) {
            const uint8_t *frame = (const uint8_t *)buf + (size_t)i * frame_bytes;
            if (!s.pixels) {
                if (fl_colour_frame((const float *)(const void *)frame, s.C, s.H, s.W, s.space, rgb, &err)) {
                    fprintf(stderr, "fifolab export: %s: %s\n", path, fl_error_msg(&err));
                    goto out;
                }
                frame = rgb;
            }
            if (fl_video_frame(v, frame, &err)) {
                fprintf(stderr, "fifolab export: %s\n", fl_error_msg(&err));
                goto out;
            }
        }
    }
    fl_video *done = v;
    v = NULL;
    if (fl_video_close(done, &err)) {
        fprintf(stderr, "fifolab export: %s\n", fl_error_msg(&err));
        goto out;
    }
    printf("%s: %lld frames (%s, %dx%d, scaled x%d to %dx%d, %d fps) ->", path, (long long)s.n,
           s.pixels ? "/frames/pixels" : s.space == FL_COLOUR_PIXELS ? "/frames/latent as pixels"
                                                                   : "/frames/latent as latents",
           s.W, s.H, o->scale, s.W * o->scale, s.H * o->scale, o->fps);
    if (o->mp4)
        printf(" %s", o->mp4);
    if (o->gif)
        printf(" %s", o->gif);
    if (o->png_dir)
        printf(" %s/frame_*.png", o->png_dir);
    printf("\n");
    rc = 0;
out:
    fl_video_discard(v);
    free(buf);
    free(rgb);
    if (s.dset >= 0) {
        fl_h5_lock();
        H5Dclose(s.dset);
        fl_h5_unlock();
    }
    fl_runfile_close_read(fid);
    return rc;
}

int fl_cmd_export(int argc, char **argv)
{
    fl_video_opts o = { 0 };
    const char *run = NULL;
    int space = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        static const char *const opts[] = { "--mp4", "--gif", "--png", "--fps", "--scale", "--space", NULL };
        int k = -1;
        const char *val = NULL;
        for (int j = 0; opts[j]; j++) {
            size_t l = strlen(opts[j]);
            if (!strncmp(a, opts[j], l) && (a[l] == 0 || a[l] == '=')) {
                k = j;
                if (a[l] == '=') {
                    val = a + l + 1;
                } else if (i + 1 < argc) {
                    val = argv[++i];
                } else {
                    fprintf(stderr, "fifolab export: %s needs a value\n", a);
                    return 2;
                }
                break;
            }
        }
        if (k < 0 && a[0] == '-' && a[1]) {
            fprintf(stderr, "fifolab export: unknown option \"%s\" (see 'fifolab export --help')\n", a);
            return 2;
        }
        if (k < 0) {
            if (run) {
                fprintf(stderr, "fifolab export: unexpected argument \"%s\" (one RUN only)\n", a);
                return 2;
            }
            run = a;
            continue;
        }
        if (k <= 2 && !*val) {
            fprintf(stderr, "fifolab export: %s needs a non-empty path\n", opts[k]);
            return 2;
        }
        switch (k) {
        case 0: o.mp4 = val; break;
        case 1: o.gif = val; break;
        case 2: o.png_dir = val; break;
        case 3: if (!parse_int("--fps", val, 1, 240, &o.fps)) return 2; break;
        case 4: if (!parse_int("--scale", val, 1, 64, &o.scale)) return 2; break;
        default:
            if ((space = fl_colour_space_parse(val)) < 0) {
                fprintf(stderr, "fifolab export: --space wants latent or pixels, not \"%s\"\n", val);
                return 2;
            }
        }
    }
    if (!run || (!o.mp4 && !o.gif && !o.png_dir)) {
        fprintf(stderr, "fifolab export: %s\n", !run ? "which run? (a run directory or its run.h5)"
                                                     : "no output: give --mp4, --gif or --png");
        usage(stderr);
        return 2;
    }
    return export_run(run, &o, space);
}
