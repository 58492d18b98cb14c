/* The fifolab command-line tool: subcommand dispatch, --help and --version. Exit codes
 * follow Unix custom: 0 success, 1 failure of the work, 2 bad usage. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "core/version.h"
#include "models/checkpoint.h"
#include "ops/ops.h"

#include <cblas.h>

#include "core/cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab [--help] [--version] <command> [args]\n"
            "\n"
            "Research framework for endless video generation with diffusion models.\n"
            "\n"
            "commands:\n"
            "  run         run an experiment or sweep script (Lua) into run directories\n"
            "  resume      continue an interrupted run from its saved state\n"
            "  plan        list a sweep's points with their run ids and directories\n"
            "  info        summarize a run file (config, status, frames, metrics)\n"
            "  summarize   one comparison table of every run under a directory\n"
            "  eval        compute metrics of run files offline into their /metrics\n"
            "  fd          Frechet distance (or --mmd) between two HDF5 feature sets\n"
            "  export      render a run's frames to MP4, GIF or PNG frames (ffmpeg)\n"
            "  generate    run the built-in experiment (defaults + --set) into plain files\n"
            "  data        make a procedural clip dataset (HDF5) for the empirical model\n"
            "  backends    list the compute backends this build has and check each one\n"
            "  inspect     list the tensors, totals and metadata of a checkpoint file\n"
            "  version     print the version, git commit and build options\n"
            "  help        show this help\n"
            "\n"
            "Run 'fifolab <command> --help' for a command's options.\n");
}

static int cmd_version(void)
{
    printf("fifolab %s (git %s%s)\n", FL_VERSION, FL_GIT_COMMIT, FL_GIT_DIRTY ? ", dirty" : "");
    printf("backends:");
    for (const char *const *n = fl_backend_list(); *n; n++)
        printf(" %s", *n);
    printf("\n");
    return 0;
}

/* Creates each backend and runs a small product and a reduction on it against the
 * reference, so `fifolab backends` says whether this machine's build really works. */
static int check_backend(const char *name)
{
    fl_error err;
    fl_error_clear(&err);
    fl_backend *be = NULL, *ref = NULL;
    fl_tensor a = FL_TENSOR_NULL, b = FL_TENSOR_NULL, c = FL_TENSOR_NULL, r = FL_TENSOR_NULL,
              ha = FL_TENSOR_NULL, hb = FL_TENSOR_NULL, hc = FL_TENSOR_NULL;
    int64_t shape[2] = { 64, 64 };
    int rc = 1;
    fl_status st = fl_backend_new(&be, name, 0, NULL, &err);
    if (st) {
        printf("  %-8s unavailable: %s\n", name, fl_error_msg(&err));
        return st == FL_E_DEVICE || st == FL_E_UNSUPPORTED ? 0 : 1;
    }
    fl_rng rng;
    fl_rng_init(&rng, 1);
    fl_rng_addr addr = { FL_RNG_STREAM_TEST, 0, 0 };
    if ((st = fl_backend_new(&ref, "cpu-ref", 0, NULL, &err)) ||
        (st = fl_tensor_empty(&ha, FL_F32, 2, shape, NULL, &err)) ||
        (st = fl_tensor_empty(&hb, FL_F32, 2, shape, NULL, &err)) ||
        (st = fl_tensor_empty(&hc, FL_F32, 2, shape, NULL, &err)) ||
        (st = fl_tensor_empty(&r, FL_F32, 2, shape, NULL, &err)))
        goto out;
    fl_rng_normal(&rng, addr, 0, 64 * 64, fl_tensor_data(&ha));
    fl_rng_normal(&rng, addr, 64 * 64, 64 * 64, fl_tensor_data(&hb));
    if ((st = fl_empty(be, &a, FL_F32, 2, shape, &err)) || (st = fl_empty(be, &b, FL_F32, 2, shape, &err)) ||
        (st = fl_empty(be, &c, FL_F32, 2, shape, &err)) || (st = fl_copy(be, &a, &ha, &err)) ||
        (st = fl_copy(be, &b, &hb, &err)) || (st = fl_matmul(be, &c, &a, &b, 0, 1.0, 0.0, &err)) ||
        (st = fl_copy(be, &hc, &c, &err)) || (st = fl_matmul(ref, &r, &ha, &hb, 0, 1.0, 0.0, &err)))
        goto out;
    double num = 0, den = 0;
    const float *x = fl_tensor_data(&hc), *y = fl_tensor_data(&r);
    for (int i = 0; i < 64 * 64; i++) {
        num += (double)(x[i] - y[i]) * (x[i] - y[i]);
        den += (double)y[i] * y[i];
    }
    double rel = den > 0 ? num / den : num;
    rc = rel < 1e-10 ? 0 : 1;
    printf("  %-8s %s: 64x64 matmul vs reference, relative squared error %.1e%s\n", name,
           rc ? "WRONG" : "ok", rel, rc ? " (over 1e-10)" : "");
out:
    if (st)
        printf("  %-8s FAILED: %s\n", name, fl_error_msg(&err));
    fl_tensor_release(&a);
    fl_tensor_release(&b);
    fl_tensor_release(&c);
    fl_tensor_release(&r);
    fl_tensor_release(&ha);
    fl_tensor_release(&hb);
    fl_tensor_release(&hc);
    fl_backend_free(ref);
    fl_backend_free(be);
    return st ? 1 : rc;
}

static int cmd_backends(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: fifolab backends\n\nLists the compute backends of this build, creates each one and\n"
               "checks a 64x64 matrix product against the reference backend.\n"
               "Exit status 1 if a compiled-in backend gives a wrong answer.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "fifolab backends: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    printf("fifolab %s backends (CUDA %s in this build; BLAS: %s):\n", FL_VERSION,
           fl_backend_have_cuda() ? "compiled" : "not compiled", openblas_get_config());
    int rc = 0;
    for (const char *const *n = fl_backend_list(); *n; n++)
        rc |= check_backend(*n);
    if (!fl_backend_have_cuda())
        printf("  %-8s not built (no nvcc at build time, or NO_CUDA=1)\n", "cuda");
    return rc;
}

static void inspect_usage(FILE *f)
{
    fprintf(f, "usage: fifolab inspect [--filter PREFIX] [--root KEY] FILE\n\n"
               "Validates a checkpoint and lists its tensors (name, dtype, shape, bytes), the\n"
               "totals per dtype and its metadata. FILE is a .safetensors file, a sharded\n"
               "checkpoint's *.safetensors.index.json, or a PyTorch zip checkpoint\n"
               "(.ckpt/.pt/.pth).\n\n"
               "  --filter PREFIX  list only tensors whose name starts with PREFIX\n"
               "  --root KEY       PyTorch: take tensors from this dotted key path of the\n"
               "                   top-level object ('' = all of it; default: 'state_dict'\n"
               "                   when there is one)\n\n"
               "Exit status 1 if the file cannot be read or is malformed (the message says\n"
               "where), 2 on bad usage.\n");
}

static int cmd_inspect(int argc, char **argv)
{
    const char *file = NULL, *filter = NULL, *root = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            inspect_usage(stdout);
            return 0;
        }
        const char **opt = strncmp(a, "--filter", 8) == 0 ? &filter : strncmp(a, "--root", 6) == 0 ? &root : NULL;
        size_t olen = opt == &filter ? 8 : 6;
        if (opt && (a[olen] == '\0' || a[olen] == '=')) {
            if (a[olen] == '=') {
                *opt = a + olen + 1;
            } else if (i + 1 < argc) {
                *opt = argv[++i];
            } else {
                fprintf(stderr, "fifolab inspect: %s needs a value\n", a);
                return 2;
            }
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "fifolab inspect: unknown option '%s' (see 'fifolab inspect --help')\n", a);
            return 2;
        }
        if (file) {
            fprintf(stderr, "fifolab inspect: unexpected argument '%s' (one FILE only)\n", a);
            return 2;
        }
        file = a;
    }
    if (!file) {
        inspect_usage(stderr);
        return 2;
    }
    fl_ckpt_options opt = { 0 };
    opt.root = root;
    fl_ckpt *c;
    fl_error err;
    fl_error_clear(&err);
    if (fl_ckpt_open(&c, file, &opt, &err)) {
        fprintf(stderr, "fifolab inspect: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_ckpt_list(stdout, c, filter);
    fl_ckpt_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    fl_cli_git_commit = FL_GIT_COMMIT;
    fl_cli_git_dirty = FL_GIT_DIRTY;
    const char *cmd = argv[1];
    bool help = strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0;
    bool version = strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0;
    if ((help || version) && argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        usage(stdout); /* "fifolab version --help": the usage names both */
        return 0;
    }
    if ((help || version) && argc > 2) {
        fprintf(stderr, "fifolab %s: unexpected argument '%s'\n", cmd, argv[2]);
        return 2;
    }
    if (help) {
        usage(stdout);
        return 0;
    }
    if (version)
        return cmd_version();
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } commands[] = {
        { "run", fl_cmd_run },         { "resume", fl_cmd_resume },
        { "plan", fl_cmd_plan },       { "info", fl_cmd_info },
        { "summarize", fl_cmd_summarize }, { "fd", fl_cmd_fd },
        { "eval", fl_cmd_eval },       { "data", fl_cmd_data },
        { "export", fl_cmd_export },
        { "generate", fl_cmd_generate }, { "backends", cmd_backends },
        { "inspect", cmd_inspect },
    };
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "fifolab: unknown command '%s' (run 'fifolab --help' for the list)\n", cmd);
    return 2;
}
