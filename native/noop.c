/*
 * noop - a task that does nothing (for throughput benchmarks).
 *
 * usage: noop [OUT [TEXT]]
 *
 * Exits 0 at once. With OUT, first writes TEXT (default "ok\n") to the file OUT.
 */
#include "xwch_util.h"

#include <string.h>

int main(int argc, char **argv)
{
    xw_prog = "noop";
    if (argc > 3)
        xw_usage_error("usage: noop [OUT [TEXT]]\n", "expected at most 2 arguments, got %d",
                       argc - 1);
    if (argc >= 2) {
        const char *text = argc == 3 ? argv[2] : "ok\n";
        FILE *f = xw_open_out(argv[1]);
        fputs(text, f);
        xw_close_out(f, argv[1]);
    }
    return 0;
}
