/* `fifolab data`: make a procedural clip dataset (data/procgen.h) into an HDF5 file, import
 * ordinary video files into one (data/video_read.h), or summarize one (data/clips.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/cli.h"
#include "core/run.h"
#include "data/clips.h"
#include "data/procgen.h"
#include "data/video_read.h"

static void usage(FILE *f)
{
    fl_procgen_opts d;
    fl_procgen_opts_default(&d);
    fprintf(f,
            "usage: fifolab data make --out FILE [options]\n"
            "       fifolab data import VIDEO... --out FILE [options]\n"
            "       fifolab data info FILE\n"
            "\n"
            "make: generates procedural videos (coloured sprites moving, bouncing and spinning\n"
            "over grey backgrounds, a caption per segment such as \"a red circle moving left\"),\n"
            "cuts them into clips at every offset and writes an HDF5 clip dataset (layout in\n"
            "docs/data.md), the input of the `empirical` model. Deterministic: the same options\n"
            "give the same file. Missing parent directories are created.\n"
            "\n"
            "options of make:\n"
            "  --out FILE      the dataset to write (required; replaced if it exists)\n"
            "  --seed N        generator seed (default %llu)\n"
            "  --size HxW      frame size, 8..512 each (default %dx%d)\n"
            "  --window F      frames per clip, the model's window (default %d)\n"
            "  --videos N      videos, one sprite each (default %d: every shape and colour pair)\n"
            "  --frames N      frames per video (default %d)\n"
            "  --segment N     frames per caption segment (default %d)\n"
            "  --shapes N      the first N of circle, square, triangle, ring (default %d)\n"
            "  --colors N      the first N of red, green, blue, yellow, magenta, cyan, orange,\n"
            "                  purple (default %d)\n"
            "  --texture       stripes on the sprites\n"
            "  -h, --help      show this help\n"
            "\n"
            "import: decodes ordinary video files with ffmpeg (FIFOLAB_FFMPEG: which one) into\n"
            "the same kind of dataset, one video per file, clips at every offset, every frame of\n"
            "a file captioned with its --caption (default: the file's name without directory and\n"
            "extension).\n"
            "\n"
            "options of import:\n"
            "  --out FILE      the dataset to write (required; replaced if it exists)\n"
            "  --size HxW      scale every frame to this size, 1..%d each (default: the files'\n"
            "                  own size, which must then be the same for all)\n"
            "  --window F      frames per clip, the model's window (default %d)\n"
            "  --caption TEXT  the caption of the next file, in order: once per file, or once\n"
            "                  for all of them\n"
            "  --every N       keep every N-th frame of a file, from its first (default 1)\n"
            "  --max-frames N  keep at most N frames of each file (default: all)\n"
            "\n"
            "info: prints a dataset's sizes, generator and captions in use.\n"
            "\n"
            "Exit status: 0 done, 1 the file could not be written or read, 2 bad usage.\n",
            (unsigned long long)d.seed, d.height, d.width, d.window, d.videos, d.frames, d.segment,
            d.shapes, d.colors, FL_CLIPS_MAX_SIDE, d.window);
}

static int cmd_make(int argc, char **argv)
{
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--texture")) {
            o.texture = 1;
            continue;
        }
        static const char *const with_value[] = { "--out",    "--seed",   "--size",   "--window", "--videos",
                                                  "--frames", "--segment", "--shapes", "--colors", NULL };
        int k = 0;
        while (with_value[k] && strcmp(a, with_value[k]))
            k++;
        if (!with_value[k]) {
            fprintf(stderr, "fifolab data make: unknown option '%s' (see 'fifolab data --help')\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "fifolab data make: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long long n = 0;
        switch (k) {
        case 0: out = v; break;
        case 1:
            if (fl_cli_int("data make", a, v, 0, LLONG_MAX, &n))
                return 2;
            o.seed = (uint64_t)n;
            break;
        case 2: {
            int h, w;
            char tail;
            if (sscanf(v, "%dx%d%c", &h, &w, &tail) != 2 || h < 8 || w < 8 || h > 512 || w > 512) {
                fprintf(stderr, "fifolab data make: --size: expected HxW with sides 8..512, got '%s'\n", v);
                return 2;
            }
            o.height = h;
            o.width = w;
            break;
        }
        default: {
            int *field[] = { NULL, NULL, NULL, &o.window, &o.videos, &o.frames, &o.segment, &o.shapes, &o.colors };
            if (fl_cli_int("data make", a, v, 1, 100000, &n))
                return 2;
            *field[k] = (int)n;
            break;
        }
        }
    }
    if (!out) {
        fprintf(stderr, "fifolab data make: --out FILE is required (see 'fifolab data --help')\n");
        return 2;
    }
    fl_error err;
    fl_error_clear(&err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fl_clips *c = NULL;
    fl_status st = fl_procgen_make(&o, &c, &err);
    if (st) {
        /* option ranges come back as the generator's own message, naming the option */
        fprintf(stderr, "fifolab data make: %s\n", fl_error_msg(&err));
        return st == FL_E_INVALID ? 2 : 1;
    }
    if (fl_mkdirs_parent(out, &err)) {
        fprintf(stderr, "fifolab data make: %s: cannot create its directory: %s\n", out, fl_error_msg(&err));
        fl_clips_free(c);
        return 1;
    }
    st = fl_clips_write(c, out, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st) {
        fprintf(stderr, "fifolab data make: %s\n", fl_error_msg(&err));
        fl_clips_free(c);
        return 1;
    }
    struct stat sb;
    double mb = stat(out, &sb) == 0 ? (double)sb.st_size / 1e6 : 0.0;
    printf("wrote %s: %lld videos x %d frames of %dx%d RGB, %lld clips of %d frames, %d captions "
           "(%.1f MB, %.2f s)\n",
           out, (long long)c->nvideos, o.frames, c->height, c->width, (long long)c->nclips, c->window,
           c->ncaptions, mb, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    fl_clips_free(c);
    return 0;
}

/* ---- import ------------------------------------------------------------------------------ */

#define IMPORT_MAX_BYTES ((int64_t)4 << 30) /* the same cap as procgen's datasets */

/* The default caption of a file: its name without directory and extension. */
static void caption_of_file(const char *path, char *buf, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, size, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf)
        *dot = '\0';
}

/* The id of caption `text` in caps[0 .. *n), added when new; -1 when out of memory. */
static int caption_id(char **caps, int *n, const char *text)
{
    for (int k = 0; k < *n; k++)
        if (!strcmp(caps[k], text))
            return k;
    size_t len = strlen(text) + 1;
    if (!(caps[*n] = malloc(len)))
        return -1;
    memcpy(caps[*n], text, len);
    return (*n)++;
}

typedef struct import_buf {
    uint8_t *frames;       /* [T, H, W, 3] */
    int32_t *caption;      /* [T] */
    int64_t n, cap;        /* frames held, room */
} import_buf;

/* Room for one more frame of fbytes; 0 ok, -1 out of memory, -2 over the size cap. */
static int import_grow(import_buf *b, size_t fbytes)
{
    if (b->n < b->cap)
        return 0;
    int64_t cap = b->cap ? b->cap * 2 : 64;
    if ((int64_t)fbytes * b->n >= IMPORT_MAX_BYTES)
        return -2;
    if ((int64_t)fbytes * cap > IMPORT_MAX_BYTES)
        cap = IMPORT_MAX_BYTES / (int64_t)fbytes + 1;
    uint8_t *f = realloc(b->frames, (size_t)cap * fbytes);
    if (!f)
        return -1;
    b->frames = f;
    int32_t *c = realloc(b->caption, (size_t)cap * sizeof *c);
    if (!c)
        return -1;
    b->caption = c;
    b->cap = cap;
    return 0;
}

static int cmd_import(int argc, char **argv)
{
    const char *out = NULL;
    int height = 0, width = 0;
    long long window = 16, every = 1, max_frames = 0;
    const char **files = calloc((size_t)argc, sizeof *files), **caps_given = calloc((size_t)argc, sizeof *caps_given);
    int nfiles = 0, ncap_given = 0, rc = 2, only_files = 0;
    if (!files || !caps_given) {
        fprintf(stderr, "fifolab data import: out of memory\n");
        free(files);
        free(caps_given);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || !a[1]) {
            files[nfiles++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_files = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto done;
        }
        static const char *const with_value[] = { "--out", "--size", "--window", "--caption", "--every",
                                                  "--max-frames", NULL };
        int k = 0;
        while (with_value[k] && strcmp(a, with_value[k]))
            k++;
        if (!with_value[k]) {
            fprintf(stderr, "fifolab data import: unknown option '%s' (see 'fifolab data --help')\n", a);
            goto done;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "fifolab data import: %s needs a value\n", a);
            goto done;
        }
        const char *v = argv[++i];
        switch (k) {
        case 0: out = v; break;
        case 1: {
            char tail;
            if (sscanf(v, "%dx%d%c", &height, &width, &tail) != 2 || height < 1 || width < 1 ||
                height > FL_CLIPS_MAX_SIDE || width > FL_CLIPS_MAX_SIDE) {
                fprintf(stderr, "fifolab data import: --size: expected HxW with sides 1..%d, got '%s'\n",
                        FL_CLIPS_MAX_SIDE, v);
                goto done;
            }
            break;
        }
        case 2:
            if (fl_cli_int("data import", a, v, 1, FL_CLIPS_MAX_WINDOW, &window))
                goto done;
            break;
        case 3:
            if (!*v || strlen(v) >= FL_CLIPS_MAX_CAPTION) {
                fprintf(stderr, "fifolab data import: --caption: expected a text of 1..%d bytes, got %zu\n",
                        FL_CLIPS_MAX_CAPTION - 1, strlen(v));
                goto done;
            }
            caps_given[ncap_given++] = v;
            break;
        case 4:
            if (fl_cli_int("data import", a, v, 1, 100000, &every))
                goto done;
            break;
        default:
            if (fl_cli_int("data import", a, v, 1, INT32_MAX, &max_frames))
                goto done;
            break;
        }
    }
    if (!out) {
        fprintf(stderr, "fifolab data import: --out FILE is required (see 'fifolab data --help')\n");
        goto done;
    }
    if (!nfiles) {
        fprintf(stderr, "fifolab data import: no video files given (see 'fifolab data --help')\n");
        goto done;
    }
    if (ncap_given > 1 && ncap_given != nfiles) {
        fprintf(stderr, "fifolab data import: %d captions for %d files: give one --caption per file, or one "
                "for all\n", ncap_given, nfiles);
        goto done;
    }
    rc = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    import_buf b = { NULL, NULL, 0, 0 };
    char **caps = calloc((size_t)nfiles, sizeof *caps);
    int64_t *vlen = calloc((size_t)nfiles, sizeof *vlen);
    uint8_t *rgb = NULL;
    int ncaps = 0;
    fl_clips *c = NULL;
    fl_error err;
    fl_error_clear(&err);
    if (!caps || !vlen) {
        fprintf(stderr, "fifolab data import: out of memory\n");
        goto free_all;
    }
    int H = height, W = width;
    const char *first = NULL; /* the file that set the size, when it is the files' own */
    for (int f = 0; f < nfiles; f++) {
        char name[FL_CLIPS_MAX_CAPTION];
        if (ncap_given)
            snprintf(name, sizeof name, "%s", caps_given[ncap_given == 1 ? 0 : f]);
        else
            caption_of_file(files[f], name, sizeof name);
        if (!*name)
            snprintf(name, sizeof name, "video %d", f);
        int cid = caption_id(caps, &ncaps, name);
        if (cid < 0) {
            fprintf(stderr, "fifolab data import: out of memory\n");
            goto free_all;
        }
        fl_video_read_opts ro = { NULL, max_frames ? (int64_t)(max_frames - 1) * every + 1 : 0 };
        fl_video_reader *r = NULL;
        if (fl_video_reader_open(files[f], height, width, &ro, &r, &err)) {
            fprintf(stderr, "fifolab data import: %s\n", fl_error_msg(&err));
            goto free_all;
        }
        int h, w;
        fl_video_reader_size(r, &h, &w);
        if (!H) {
            if (h > FL_CLIPS_MAX_SIDE || w > FL_CLIPS_MAX_SIDE) {
                fprintf(stderr, "fifolab data import: %s: frames of %dx%d, larger than a dataset holds (sides up "
                        "to %d): use --size HxW\n", files[f], h, w, FL_CLIPS_MAX_SIDE);
                fl_video_reader_close(r);
                goto free_all;
            }
            H = h;
            W = w;
            first = files[f];
        } else if (h != H || w != W) {
            fprintf(stderr, "fifolab data import: %s: frames of %dx%d, but %s's are %dx%d (use --size HxW to "
                    "scale them all to one size)\n", files[f], h, w, first, H, W);
            fl_video_reader_close(r);
            goto free_all;
        }
        size_t fbytes = (size_t)H * (size_t)W * 3;
        if (!rgb && !(rgb = malloc(fbytes))) {
            fprintf(stderr, "fifolab data import: out of memory\n");
            fl_video_reader_close(r);
            goto free_all;
        }
        int got;
        for (int64_t t = 0; (got = fl_video_reader_frame(r, rgb, &err)) == 1; t++) {
            if (t % every)
                continue;
            int g = import_grow(&b, fbytes);
            if (g) {
                if (g == -1)
                    fprintf(stderr, "fifolab data import: out of memory after %lld frames\n", (long long)b.n);
                else
                    fprintf(stderr, "fifolab data import: %s: the dataset would pass %lld GiB (use --size, "
                            "--every or --max-frames)\n", files[f], (long long)(IMPORT_MAX_BYTES >> 30));
                fl_video_reader_close(r);
                goto free_all;
            }
            memcpy(b.frames + (size_t)b.n * fbytes, rgb, fbytes);
            b.caption[b.n++] = cid;
            if (++vlen[f] == max_frames)
                break;
        }
        fl_video_reader_close(r);
        if (got < 0) {
            fprintf(stderr, "fifolab data import: %s\n", fl_error_msg(&err));
            goto free_all;
        }
        if (vlen[f] < window)
            fprintf(stderr, "fifolab data import: warning: %s: %lld frames, fewer than the window (%lld): no clip "
                    "starts in it\n", files[f], (long long)vlen[f], window);
    }
    int64_t nclips = 0;
    for (int f = 0; f < nfiles; f++)
        if (vlen[f] >= window)
            nclips += vlen[f] - window + 1;
    if (!nclips) {
        fprintf(stderr, "fifolab data import: no file has %lld frames (the window): no clips to write\n", window);
        goto free_all;
    }
    if (fl_clips_alloc((int)window, H, W, 1, nfiles, nclips, ncaps, &c, &err)) {
        fprintf(stderr, "fifolab data import: %s\n", fl_error_msg(&err));
        goto free_all;
    }
    /* the frames read are the dataset's arrays (owned, malloc'd): no second copy */
    free(c->frames);
    free(c->frame_caption);
    c->frames = b.frames;
    c->frame_caption = b.caption;
    c->nframes = b.n;
    b.frames = NULL;
    b.caption = NULL;
    for (int f = 0; f < nfiles; f++) {
        c->video_first[f] = f ? c->video_first[f - 1] + vlen[f - 1] : 0;
        c->video_len[f] = vlen[f];
    }
    for (int k = 0; k < ncaps; k++) {
        c->captions[k] = caps[k];
        caps[k] = NULL;
    }
    fl_clips_fill_offsets(c);
    char gen[1024];
    int used = snprintf(gen, sizeof gen, "import size=%dx%d%s window=%lld every=%lld max-frames=%lld files=", H, W,
                        height ? "" : " (the files')", window, every, max_frames);
    for (int f = 0; f < nfiles && used > 0 && used < (int)sizeof gen; f++)
        used += snprintf(gen + used, sizeof gen - (size_t)used, "%s%s", f ? "," : "", files[f]);
    if (used >= (int)sizeof gen)
        memcpy(gen + sizeof gen - 4, "...", 4);
    size_t glen = strlen(gen) + 1;
    if ((c->generator = malloc(glen)))
        memcpy(c->generator, gen, glen);
    if (fl_clips_check(c, &err)) {
        fprintf(stderr, "fifolab data import: %s\n", fl_error_msg(&err));
        goto free_all;
    }
    if (fl_mkdirs_parent(out, &err)) {
        fprintf(stderr, "fifolab data import: %s: cannot create its directory: %s\n", out, fl_error_msg(&err));
        goto free_all;
    }
    if (fl_clips_write(c, out, &err)) {
        fprintf(stderr, "fifolab data import: %s\n", fl_error_msg(&err));
        goto free_all;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct stat sb;
    double mb = stat(out, &sb) == 0 ? (double)sb.st_size / 1e6 : 0.0;
    printf("wrote %s: %lld videos, %lld frames of %dx%d RGB, %lld clips of %d frames, %d captions "
           "(%.1f MB, %.2f s)\n",
           out, (long long)c->nvideos, (long long)c->nframes, c->height, c->width, (long long)c->nclips,
           c->window, c->ncaptions, mb,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    rc = 0;
free_all:
    fl_clips_free(c);
    if (caps)
        for (int k = 0; k < ncaps; k++)
            free(caps[k]);
    free(caps);
    free(vlen);
    free(rgb);
    free(b.frames);
    free(b.caption);
done:
    free(files);
    free(caps_given);
    return rc;
}

static int cmd_info(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 2 && argv[1][0] == '-' && argv[1][1]) {
        fprintf(stderr, "fifolab data info: unknown option '%s' (see 'fifolab data --help')\n", argv[1]);
        return 2;
    }
    if (argc != 2) {
        fprintf(stderr, "fifolab data info: expected one FILE (see 'fifolab data --help')\n");
        return 2;
    }
    fl_error err;
    fl_error_clear(&err);
    fl_clips *c = NULL;
    if (fl_clips_read(argv[1], &c, &err)) {
        fprintf(stderr, "fifolab data info: %s\n", fl_error_msg(&err));
        return 1;
    }
    printf("%s: %lld frames of %dx%d RGB in %lld videos, %lld clips of %d frames, %d captions\n",
           argv[1], (long long)c->nframes, c->height, c->width, (long long)c->nvideos,
           (long long)c->nclips, c->window, c->ncaptions);
    if (c->generator && c->generator[0])
        printf("generator: %s\n", c->generator);
    int64_t *count = calloc((size_t)c->ncaptions, sizeof *count);
    if (count) {
        for (int64_t t = 0; t < c->nframes; t++)
            count[c->frame_caption[t]]++;
        printf("captions in use (frames):\n");
        for (int k = 0; k < c->ncaptions; k++)
            if (count[k])
                printf("  %6lld  %s\n", (long long)count[k], c->captions[k]);
        free(count);
    }
    fl_clips_free(c);
    return 0;
}

int fl_cmd_data(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "make"))
        return cmd_make(argc - 1, argv + 1);
    if (!strcmp(argv[1], "import"))
        return cmd_import(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info"))
        return cmd_info(argc - 1, argv + 1);
    fprintf(stderr, "fifolab data: unknown subcommand '%s' (make, import, info; see 'fifolab data --help')\n",
            argv[1]);
    return 2;
}
