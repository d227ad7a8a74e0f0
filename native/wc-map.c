/*
 * wc-map - count the words of one text shard.
 *
 * usage: wc-map INPUT.txt OUT.tsv
 *
 * A word is a maximal run of ASCII letters and digits, lowercased; every other byte (spaces,
 * punctuation, non-ASCII bytes) separates words. Writes one "word<TAB>count" line per distinct
 * word, sorted by word (byte order). An empty input gives an empty output.
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: wc-map INPUT.txt OUT.tsv\n"
                            "  Writes word<TAB>count lines (sorted by word) for INPUT.txt.\n";

int main(int argc, char **argv)
{
    const char *in_path, *out_path;
    FILE *in;
    xw_counts counts;
    static unsigned char buf[1 << 16];
    char *word;
    size_t wlen = 0, wcap = 64, got, i;

    xw_prog = "wc-map";
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 3)
        xw_usage_error(usage, "expected 2 arguments, got %d", argc - 1);
    in_path = argv[1];
    out_path = argv[2];

    in = fopen(in_path, "rb");
    if (!in)
        xw_die("cannot open %s: %s", in_path, strerror(errno));
    xw_counts_init(&counts);
    word = xw_malloc(wcap);
    while ((got = fread(buf, 1, sizeof buf, in)) > 0) {
        for (i = 0; i < got; i++) {
            unsigned char c = buf[i];
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
                if (wlen == wcap) {
                    wcap *= 2;
                    word = xw_realloc(word, wcap);
                }
                word[wlen++] = (char)c;
            } else if (wlen > 0) {
                if (xw_counts_add(&counts, word, wlen, 1) != 0)
                    xw_die("count overflow");
                wlen = 0;
            }
        }
    }
    if (ferror(in))
        xw_die("cannot read %s: %s", in_path, strerror(errno));
    fclose(in);
    if (wlen > 0 && xw_counts_add(&counts, word, wlen, 1) != 0)
        xw_die("count overflow");

    xw_counts_write(&counts, out_path);
    printf("wc-map: %lu distinct words in %s\n", (unsigned long)counts.used, in_path);
    free(word);
    xw_counts_free(&counts);
    return 0;
}
