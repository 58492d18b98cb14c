/* `fifolab data`: make a procedural clip dataset (data/procgen.h) into an HDF5 file, or
 * summarize one (data/clips.h). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/cli.h"
#include "data/clips.h"
#include "data/procgen.h"

static void usage(FILE *f)
{
    fl_procgen_opts d;
    fl_procgen_opts_default(&d);
    fprintf(f,
            "usage: fifolab data make --out FILE [options]\n"
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
            "info: prints a dataset's sizes, generator and captions in use.\n"
            "\n"
            "Exit status: 0 done, 1 the file could not be written or read, 2 bad usage.\n",
            (unsigned long long)d.seed, d.height, d.width, d.window, d.videos, d.frames, d.segment,
            d.shapes, d.colors);
}

/* A whole-text decimal integer in [lo, hi]; 0 ok, -1 with a message naming the option. */
static int parse_int(const char *opt, const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "fifolab data make: %s: expected an integer in [%ld, %ld], got '%s'\n", opt,
                lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

/* mkdir -p of the directory part of path; 0 ok. */
static int make_parent(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
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
        long n = 0;
        switch (k) {
        case 0: out = v; break;
        case 1:
            if (parse_int(a, v, 0, LONG_MAX, &n))
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
            if (parse_int(a, v, 1, 100000, &n))
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
    if (make_parent(out) != 0) {
        fprintf(stderr, "fifolab data make: %s: cannot create its directory: %s\n", out, strerror(errno));
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

static int cmd_info(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
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
    if (!strcmp(argv[1], "info"))
        return cmd_info(argc - 1, argv + 1);
    fprintf(stderr, "fifolab data: unknown subcommand '%s' (make, info; see 'fifolab data --help')\n",
            argv[1]);
    return 2;
}
