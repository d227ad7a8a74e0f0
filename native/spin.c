/*
 * spin - a task that takes a while (for tests of long attempts, timeouts and cancellation).
 *
 * usage: spin [--sleep] SECONDS [OUT]
 *
 * Burns CPU for SECONDS of wall-clock time (or, with --sleep, sleeps that long without using
 * the CPU), then writes OUT if given ("spun SECONDS seconds\n"). SECONDS may be fractional.
 * Prints "xwch-spin: started ..." to standard output (flushed) as soon as it begins.
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: spin [--sleep] SECONDS [OUT]\n"
                            "  Burns CPU (or sleeps, with --sleep) for SECONDS, then writes OUT.\n";

static volatile double sink;

static void burn(double seconds)
{
    double end = xw_now() + seconds, x = 1.0;
    long k;
    while (xw_now() < end) {
        for (k = 0; k < 100000; k++)
            x = x * 1.0000001 + 1e-9; /* stays finite: about 1.01 per outer loop at most */
        if (x > 1e6)
            x = 1.0;
        sink = x;
    }
}

int main(int argc, char **argv)
{
    int sleep_mode = 0, i;
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    double seconds;
    char *end;

    xw_prog = "spin";
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sleep") == 0) {
            sleep_mode = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else {
            if (npos == 2)
                xw_usage_error(usage, "too many arguments");
            pos[npos++] = argv[i];
        }
    }
    if (npos == 0)
        xw_usage_error(usage, "missing SECONDS");
    errno = 0;
    seconds = strtod(pos[0], &end);
    if (errno || end == pos[0] || *end != '\0' || !(seconds >= 0.0) || seconds > 1e7)
        xw_usage_error(usage, "SECONDS must be a number between 0 and 10000000, got \"%s\"",
                       pos[0]);

    printf("xwch-spin: started, %s for %s seconds\n", sleep_mode ? "sleeping" : "burning CPU",
           pos[0]);
    fflush(stdout);
    if (sleep_mode)
        xw_doze(seconds);
    else
        burn(seconds);

    if (pos[1]) {
        FILE *f = xw_open_out(pos[1]);
        fprintf(f, "spun %s seconds\n", pos[0]);
        xw_close_out(f, pos[1]);
    }
    printf("xwch-spin: done\n");
    return 0;
}
