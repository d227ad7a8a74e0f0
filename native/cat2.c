/*
 * cat2 - concatenate two files.
 *
 * usage: cat2 A B OUT
 *
 * Writes the bytes of A followed by the bytes of B to OUT.
 */
#include "xwch_util.h"

#include <errno.h>
#include <string.h>

static const char usage[] = "usage: cat2 A B OUT\n"
                            "  Writes A followed by B to OUT.\n";

static void copy(const char *path, FILE *out, const char *out_path)
{
    static unsigned char buf[1 << 16];
    size_t got;
    FILE *in = fopen(path, "rb");
    if (!in) {
        int e = errno;
        fclose(out);
        remove(out_path);
        xw_die("cannot open %s: %s", path, strerror(e));
    }
    while ((got = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, got, out) != got)
            break;
    if (ferror(in)) {
        int e = errno;
        fclose(out);
        remove(out_path);
        xw_die("cannot read %s: %s", path, strerror(e));
    }
    fclose(in);
}

int main(int argc, char **argv)
{
    FILE *out;
    xw_prog = "cat2";
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 4)
        xw_usage_error(usage, "expected 3 arguments, got %d", argc - 1);
    out = xw_open_out(argv[3]);
    copy(argv[1], out, argv[3]);
    copy(argv[2], out, argv[3]);
    xw_close_out(out, argv[3]);
    return 0;
}
