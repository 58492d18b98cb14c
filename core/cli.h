/* Subcommands of the fifolab CLI that live outside core/main.c. Each takes the argv of its
 * own command (argv[0] = the command name) and returns the process exit status: 0 success,
 * 1 the work failed, 2 bad usage. */
#ifndef FL_CLI_H
#define FL_CLI_H

int fl_cmd_generate(int argc, char **argv);

#endif
