/*
 * fail - a task that fails on purpose (for tests).
 *
 * usage: fail [STATUS]
 *
 * Writes one line to standard output, then "xwch-fail: failing on purpose with status N" to
 * standard error, and exits with status N (0-255, default 3).
 */
#include "xwch_util.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: fail [STATUS]\n"
                            "  Exits with STATUS (0-255, default 3) after saying so on stderr.\n";

int main(int argc, char **argv)
{
    long status = 3;

    xw_prog = "fail";
    if (argc > 2)
        xw_usage_error(usage, "expected at most 1 argument, got %d", argc - 1);
    if (argc == 2) {
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (xw_parse_long(argv[1], 0, 255, &status) != 0)
            xw_usage_error(usage, "STATUS must be an integer 0-255, got \"%s\"", argv[1]);
    }
    printf("xwch-fail: this task is about to fail with status %ld\n", status);
    fflush(stdout);
    fprintf(stderr, "xwch-fail: failing on purpose with status %ld\n", status);
    return (int)status;
}
