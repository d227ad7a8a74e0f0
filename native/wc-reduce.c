/*
 * wc-reduce - merge word counts.
 *
 * usage: wc-reduce DIR OUT.tsv
 *
 * Reads every *.tsv file under DIR (recursively, following symbolic links; a job delivers them
 * as DIR/<task id>/counts.tsv), each made of "word<TAB>count" lines as written by wc-map, sums
 * the counts per word in a hash table and writes "word<TAB>total" lines sorted by word (byte
 * order). Runs in O(total input + distinct words * log(distinct words)). Blank lines are
 * ignored; a malformed line is an error naming the file and line. An empty DIR gives an empty
 * output.
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: wc-reduce DIR OUT.tsv\n"
                            "  Sums the word<TAB>count lines of every *.tsv under DIR.\n";

/* Read one line (without its '\n') into *buf; returns its length, or -1 at end of file. */
static long read_line(FILE *f, char **buf, size_t *cap, const char *path)
{
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF && c != '\n') {
        if (n + 1 >= *cap) {
            *cap *= 2;
            *buf = xw_realloc(*buf, *cap);
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF) {
        if (ferror(f))
            xw_die("cannot read %s: %s", path, strerror(errno));
        if (n == 0)
            return -1;
    }
    (*buf)[n] = '\0';
    return (long)n;
}

static void add_file(xw_counts *counts, const char *path, char **line, size_t *cap)
{
    FILE *f = fopen(path, "rb");
    long len, lineno = 0;
    if (!f)
        xw_die("cannot open %s: %s", path, strerror(errno));
    while ((len = read_line(f, line, cap, path)) >= 0) {
        char *s = *line, *tab;
        size_t wlen, k;
        uint64_t v = 0;
        lineno++;
        if (len > 0 && s[len - 1] == '\r')
            s[--len] = '\0';
        if (len == 0)
            continue;
        tab = memchr(s, '\t', (size_t)len);
        if (!tab || tab == s || tab[1] == '\0' || memchr(s, '\0', (size_t)len))
            xw_die("%s:%ld: malformed line (expected word<TAB>count)", path, lineno);
        wlen = (size_t)(tab - s);
        for (k = 1; tab[k]; k++) {
            unsigned d = (unsigned)(unsigned char)tab[k] - '0';
            if (d > 9)
                xw_die("%s:%ld: malformed count \"%s\" (expected a non-negative integer)", path,
                       lineno, tab + 1);
            if (v > (UINT64_MAX - d) / 10)
                xw_die("%s:%ld: count too large", path, lineno);
            v = v * 10 + d;
        }
        if (xw_counts_add(counts, s, wlen, v) != 0)
            xw_die("%s:%ld: total count for a word overflows", path, lineno);
    }
    fclose(f);
}

int main(int argc, char **argv)
{
    char **paths, *line;
    size_t count, i, cap = 256;
    xw_counts counts;

    xw_prog = "wc-reduce";
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 3)
        xw_usage_error(usage, "expected 2 arguments, got %d", argc - 1);

    paths = xw_find_files(argv[1], ".tsv", &count);
    xw_counts_init(&counts);
    line = xw_malloc(cap);
    for (i = 0; i < count; i++)
        add_file(&counts, paths[i], &line, &cap);
    xw_counts_write(&counts, argv[2]);
    printf("wc-reduce: %lu distinct words from %lu files\n", (unsigned long)counts.used,
           (unsigned long)count);
    free(line);
    xw_counts_free(&counts);
    xw_free_list(paths, count);
    return 0;
}
