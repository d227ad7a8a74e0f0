/*
 * merge - assemble the tiles written by `mandel` into one image.
 *
 * usage: merge TILES_DIR OUT.pgm|OUT.png
 *
 * Reads every *.pgm file under TILES_DIR (recursively, following symbolic links; a job delivers
 * them as TILES_DIR/<task id>/tile.pgm), places each by the "# xwch-tile I N W H" comment that
 * mandel writes after the magic number, checks that the tiles agree on N, W and H, that each has
 * the rows band I of N should have, and that all N are present exactly once, then writes the
 * whole W x H image as a binary PGM with the comment "# xwch-tile 0 1 W H" - the same bytes
 * `mandel --tile 0 --of 1` would produce. An OUT ending in ".png" gets a grayscale PNG instead,
 * which any viewer opens; its pixels are stored without compression (deflate's "stored"
 * blocks), so no library beyond libc is needed.
 *
 * Exit status: 0 on success, 1 on a bad or missing tile (message on stderr), 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: merge TILES_DIR OUT.pgm|OUT.png\n"
                            "  Merges the mandel tiles (*.pgm, searched recursively) under TILES_DIR\n"
                            "  into one image: binary PGM, or PNG when OUT ends in .png.\n";

/* PNG, written by hand: CRC-32 of each chunk, Adler-32 and stored blocks of the zlib stream. */
static unsigned long crc_table[256];

static void make_crc_table(void)
{
    unsigned long c;
    int n, k;
    for (n = 0; n < 256; n++) {
        c = (unsigned long)n;
        for (k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320UL ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static unsigned long crc_update(unsigned long crc, const unsigned char *buf, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        crc = crc_table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

static void put32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void write_chunk(FILE *f, const char *type, const unsigned char *data, size_t len)
{
    unsigned char head[8], tail[4];
    unsigned long crc;
    put32(head, (unsigned long)len);
    memcpy(head + 4, type, 4);
    crc = crc_update(0xffffffffUL, head + 4, 4);
    crc = crc_update(crc, data, len) ^ 0xffffffffUL;
    put32(tail, crc);
    fwrite(head, 1, 8, f);
    fwrite(data, 1, len, f);
    fwrite(tail, 1, 4, f);
}

/* The W x H 8-bit grayscale image in `raw` (rows one after the other) as a PNG. */
static void write_png(FILE *f, const unsigned char *raw, long w, long h)
{
    static const unsigned char signature[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
    unsigned char ihdr[13];
    size_t row = (size_t)w + 1, total = row * (size_t)h, blocks, i, at = 0, out = 0;
    unsigned char *filtered = xw_malloc(total), *z;
    unsigned long a = 1, b = 0;
    long y;

    for (y = 0; y < h; y++) {
        filtered[(size_t)y * row] = 0; /* filter type None */
        memcpy(filtered + (size_t)y * row + 1, raw + (size_t)y * (size_t)w, (size_t)w);
    }
    for (i = 0; i < total; i++) {
        a = (a + filtered[i]) % 65521UL;
        b = (b + a) % 65521UL;
    }
    blocks = total / 65535 + 1;
    z = xw_malloc(2 + total + 5 * blocks + 4);
    z[out++] = 0x78; /* deflate, 32 KiB window */
    z[out++] = 0x01; /* no preset dictionary; check bits */
    do {
        size_t len = total - at > 65535 ? 65535 : total - at;
        z[out++] = (unsigned char)(at + len == total); /* BFINAL, BTYPE 00 (stored) */
        z[out++] = (unsigned char)(len & 0xff);
        z[out++] = (unsigned char)(len >> 8);
        z[out++] = (unsigned char)(~len & 0xff);
        z[out++] = (unsigned char)((~len >> 8) & 0xff);
        memcpy(z + out, filtered + at, len);
        out += len;
        at += len;
    } while (at < total);
    put32(z + out, (b << 16) | a);
    out += 4;

    put32(ihdr, (unsigned long)w);
    put32(ihdr + 4, (unsigned long)h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 0;  /* grayscale */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering */
    ihdr[12] = 0; /* no interlace */
    make_crc_table();
    fwrite(signature, 1, 8, f);
    write_chunk(f, "IHDR", ihdr, sizeof ihdr);
    write_chunk(f, "IDAT", z, out);
    write_chunk(f, "IEND", NULL, 0);
    free(filtered);
    free(z);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

typedef struct {
    char *path;
    long idx, n, w, h; /* from the xwch-tile comment */
    long rows;
    unsigned char *data; /* whole file; pixels start at data + offset */
    size_t offset;
} tile;

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Parse one tile file; dies with "merge: PATH: reason" when it is not a valid xwch tile. */
static void parse_tile(tile *t)
{
    size_t len, pos = 2;
    unsigned char *b = xw_read_file(t->path, &len);
    long vals[3];
    int nvals = 0, have_comment = 0;

    t->data = b;
    if (len < 2 || b[0] != 'P' || b[1] != '5')
        xw_die("%s: not a binary PGM file (it does not start with \"P5\")", t->path);
    while (nvals < 3) {
        if (pos >= len)
            xw_die("%s: truncated PGM header", t->path);
        if (is_space(b[pos])) {
            pos++;
        } else if (b[pos] == '#') {
            size_t start = pos;
            while (pos < len && b[pos] != '\n')
                pos++;
            if (!have_comment && pos - start > 11 && memcmp(b + start, "# xwch-tile", 11) == 0) {
                char buf[128], extra;
                size_t clen = pos - start;
                if (clen >= sizeof buf)
                    xw_die("%s: malformed \"# xwch-tile\" comment", t->path);
                memcpy(buf, b + start, clen);
                buf[clen] = '\0';
                if (sscanf(buf, "# xwch-tile %ld %ld %ld %ld %c", &t->idx, &t->n, &t->w, &t->h,
                           &extra) != 4)
                    xw_die("%s: malformed comment \"%s\" (expected \"# xwch-tile I N W H\")",
                           t->path, buf);
                have_comment = 1;
            }
        } else if (b[pos] >= '0' && b[pos] <= '9') {
            long v = 0;
            while (pos < len && b[pos] >= '0' && b[pos] <= '9') {
                if (v > 100000000L)
                    xw_die("%s: number too large in PGM header", t->path);
                v = v * 10 + (b[pos] - '0');
                pos++;
            }
            vals[nvals++] = v;
        } else {
            xw_die("%s: unexpected byte 0x%02x in PGM header", t->path, b[pos]);
        }
    }
    if (pos >= len || !is_space(b[pos]))
        xw_die("%s: truncated PGM header", t->path);
    pos++; /* the single whitespace byte after maxval */
    if (!have_comment)
        xw_die("%s: not an xwch tile (no \"# xwch-tile I N W H\" comment after P5)", t->path);
    if (vals[2] != 255)
        xw_die("%s: maxval is %ld, expected 255", t->path, vals[2]);
    if (t->n < 1 || t->idx < 0 || t->idx >= t->n || t->w < 1 || t->h < t->n)
        xw_die("%s: inconsistent tile comment (tile %ld of %ld, %ld x %ld)", t->path, t->idx, t->n,
               t->w, t->h);
    {
        long y0, y1;
        xw_band(t->idx, t->n, t->h, &y0, &y1);
        t->rows = y1 - y0;
    }
    if (vals[0] != t->w || vals[1] != t->rows)
        xw_die("%s: tile %ld of %ld of a %ld x %ld image should be %ld x %ld pixels, but is %ld x %ld",
               t->path, t->idx, t->n, t->w, t->h, t->w, t->rows, vals[0], vals[1]);
    if (len - pos != (size_t)t->w * (size_t)t->rows)
        xw_die("%s: expected %lu bytes of pixels, found %lu", t->path,
               (unsigned long)((size_t)t->w * (size_t)t->rows), (unsigned long)(len - pos));
    t->offset = pos;
}

int main(int argc, char **argv)
{
    const char *dir, *out_path;
    char **paths;
    size_t count, i;
    tile *tiles, **by_idx;
    long n, w, h, k, missing = 0;
    FILE *f;

    xw_prog = "merge";
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 3)
        xw_usage_error(usage, "expected 2 arguments, got %d", argc - 1);
    dir = argv[1];
    out_path = argv[2];

    paths = xw_find_files(dir, ".pgm", &count);
    if (count == 0)
        xw_die("no tiles (*.pgm files) found under %s", dir);
    tiles = xw_malloc(count * sizeof *tiles);
    for (i = 0; i < count; i++) {
        tiles[i].path = paths[i];
        parse_tile(&tiles[i]);
    }
    n = tiles[0].n, w = tiles[0].w, h = tiles[0].h;
    for (i = 1; i < count; i++)
        if (tiles[i].n != n || tiles[i].w != w || tiles[i].h != h)
            xw_die("tiles disagree: %s is tile %ld of %ld of a %ld x %ld image, but %s is tile %ld "
                   "of %ld of a %ld x %ld image",
                   tiles[0].path, tiles[0].idx, n, w, h, tiles[i].path, tiles[i].idx, tiles[i].n,
                   tiles[i].w, tiles[i].h);

    by_idx = xw_malloc((size_t)n * sizeof *by_idx);
    for (k = 0; k < n; k++)
        by_idx[k] = NULL;
    for (i = 0; i < count; i++) {
        tile *t = &tiles[i];
        if (by_idx[t->idx])
            xw_die("duplicate tile %ld of %ld: %s and %s", t->idx, n, by_idx[t->idx]->path, t->path);
        by_idx[t->idx] = t;
    }
    for (k = 0; k < n; k++)
        if (!by_idx[k])
            missing++;
    if (missing) {
        long shown = 0;
        fflush(stdout);
        fprintf(stderr, "merge: missing %ld of %ld tiles under %s:", missing, n, dir);
        for (k = 0; k < n && shown < 20; k++)
            if (!by_idx[k]) {
                fprintf(stderr, " %ld", k);
                shown++;
            }
        fprintf(stderr, "%s\n", missing > shown ? " ..." : "");
        return XW_EXIT_ERROR;
    }

    f = xw_open_out(out_path);
    if (ends_with(out_path, ".png")) {
        unsigned char *raw = xw_malloc((size_t)w * (size_t)h);
        size_t at = 0;
        for (k = 0; k < n; k++) {
            size_t len = (size_t)w * (size_t)by_idx[k]->rows;
            memcpy(raw + at, by_idx[k]->data + by_idx[k]->offset, len);
            at += len;
        }
        write_png(f, raw, w, h);
        free(raw);
    } else {
        fprintf(f, "P5\n# xwch-tile 0 1 %ld %ld\n%ld %ld\n255\n", w, h, w, h);
        for (k = 0; k < n; k++)
            fwrite(by_idx[k]->data + by_idx[k]->offset, 1, (size_t)w * (size_t)by_idx[k]->rows, f);
    }
    xw_close_out(f, out_path);
    printf("merge: wrote %s (%ld x %ld) from %ld tiles\n", out_path, w, h, n);

    for (i = 0; i < count; i++)
        free(tiles[i].data);
    free(tiles);
    free(by_idx);
    xw_free_list(paths, count);
    return 0;
}
