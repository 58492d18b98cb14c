/* A suite's temporary directory, for the cmocka suites: paths inside it, and removing it
 * with everything in it. Header-only; include after cmocka.h, with _XOPEN_SOURCE >= 500 (or
 * _GNU_SOURCE) defined before any system header, for nftw. */
#ifndef FL_TESTS_TMPDIR_H
#define FL_TESTS_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int fl_test_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes path and everything below it; 0 when done or when path is absent. */
static inline int fl_test_rm_tree(const char *path)
{
    if (!path || !path[0] || access(path, F_OK) != 0)
        return 0;
    return nftw(path, fl_test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/name into out, failing the test when it does not fit. */
static inline void fl_test_path(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

#endif
