/* Subcommands of the fifolab CLI that live outside core/main.c. Each takes the argv of its
 * own command (argv[0] = the command name) and returns the process exit status: 0 success,
 * 1 the work failed, 2 bad usage. */
#ifndef FL_CLI_H
#define FL_CLI_H

int fl_cmd_generate(int argc, char **argv);  /* core/cli_generate.c */
int fl_cmd_run(int argc, char **argv);       /* core/cli_run.c */
int fl_cmd_resume(int argc, char **argv);    /* core/cli_run.c */
int fl_cmd_plan(int argc, char **argv);      /* core/cli_run.c */
int fl_cmd_info(int argc, char **argv);      /* core/cli_info.c */
int fl_cmd_summarize(int argc, char **argv); /* core/cli_info.c */
int fl_cmd_fd(int argc, char **argv);        /* core/cli_fd.c */
int fl_cmd_eval(int argc, char **argv);      /* core/cli_eval.c */
int fl_cmd_data(int argc, char **argv);      /* core/cli_data.c */
int fl_cmd_export(int argc, char **argv);    /* core/cli_export.c */

/* A whole-text decimal integer in [lo, hi] (hi = LLONG_MAX: no upper bound) or a finite
 * number >= lo, for option `opt` of `fifolab cmd`. 0 with *out set, or -1 after printing
 * "fifolab CMD: OPT: expected ..., got "TEXT"" to stderr (text may be NULL: missing). */
int fl_cli_int(const char *cmd, const char *opt, const char *text, long long lo, long long hi, long long *out);
int fl_cli_number(const char *cmd, const char *opt, const char *text, double lo, double *out);

/* Set by main() from the build (core/cli_run.c defines them) for the run files. */
extern const char *fl_cli_git_commit;
extern int fl_cli_git_dirty;

#endif
