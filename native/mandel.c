/*
 * mandel - render one horizontal band ("tile") of a Mandelbrot image as a binary PGM.
 *
 * usage: mandel --tile I --of N [--width W] [--height H] [--iter K] OUT.pgm
 *
 * The image is W x H pixels (default 1024 x 768) of the view x in [-2.5, 1], y in [-1.25, 1.25];
 * pixel (px, py) samples its centre: x = -2.5 + 3.5 (px + 0.5) / W, y = 1.25 - 2.5 (py + 0.5) / H.
 * Band I of N holds rows [I*H/N, (I+1)*H/N) (integer division), so the N bands tile the image
 * exactly and `--tile 0 --of 1` is the whole image. The output is
 *
 *     P5\n# xwch-tile I N W H\nW ROWS\n255\n<ROWS * W bytes>
 *
 * Gray levels: a point still bounded after K iterations is black (0). A point that escapes
 * (|z| > 2) at iteration n (1 <= n <= K) gets palette[n mod P], where the palette is read from
 * ./palette.txt when that file exists (one integer 0-255 per line; blank lines and lines starting
 * with '#' are ignored; 1 to 65536 entries) and is a built-in 32-entry ramp otherwise.
 *
 * Output is deterministic: plain double arithmetic in a fixed order (build with
 * -ffp-contract=off, as the Makefile does, so no fused multiply-add changes the rounding; the
 * bytes then match on every platform where FLT_EVAL_METHOD is 0, e.g. x86_64 and aarch64).
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: mandel --tile I --of N [--width W] [--height H] [--iter K] OUT.pgm\n"
    "  Renders band I (0-based) of N of a W x H Mandelbrot image (default 1024 x 768,\n"
    "  K = 500 iterations) as a binary PGM. Reads ./palette.txt if present.\n";

#define MAX_SIDE 32768L
#define MAX_ITER 100000000L
#define MAX_PALETTE 65536

/* Built-in palette: a triangle ramp 16 -> 255 -> 16, used when there is no palette.txt. */
static void default_palette(unsigned char *pal, size_t *n)
{
    size_t k;
    for (k = 0; k < 32; k++) {
        size_t d = k < 16 ? k : 31 - k; /* 0..15..0 */
        pal[k] = (unsigned char)(16 + (d * 239) / 15);
    }
    *n = 32;
}

static void load_palette(unsigned char *pal, size_t *n)
{
    const char *path = "palette.txt";
    FILE *f = fopen(path, "r");
    char line[256];
    long lineno = 0;
    size_t count = 0;
    if (!f) {
        if (errno == ENOENT) {
            default_palette(pal, n);
            return;
        }
        xw_die("cannot open %s: %s", path, strerror(errno));
    }
    while (fgets(line, sizeof line, f)) {
        char *s = line, *e;
        size_t len = strlen(line);
        long v;
        lineno++;
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f))
            xw_die("%s:%ld: line too long", path, lineno);
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (*s == '\0' || *s == '#')
            continue;
        if (xw_parse_long(s, 0, 255, &v) != 0)
            xw_die("%s:%ld: expected an integer 0-255, got \"%s\"", path, lineno, s);
        if (count == MAX_PALETTE)
            xw_die("%s: more than %d entries", path, MAX_PALETTE);
        pal[count++] = (unsigned char)v;
    }
    if (ferror(f))
        xw_die("cannot read %s: %s", path, strerror(errno));
    fclose(f);
    if (count == 0)
        xw_die("%s has no entries (expected one integer 0-255 per line)", path);
    *n = count;
}

static void render(unsigned char *out, long w, long h, long y0, long y1, long iters,
                   const unsigned char *pal, size_t npal)
{
    long px, py;
    for (py = y0; py < y1; py++) {
        double ci = 1.25 - 2.5 * ((double)py + 0.5) / (double)h;
        unsigned char *row = out + (size_t)(py - y0) * (size_t)w;
        for (px = 0; px < w; px++) {
            double cr = -2.5 + 3.5 * ((double)px + 0.5) / (double)w;
            double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
            long n = 0;
            while (n < iters && zr2 + zi2 <= 4.0) {
                zi = 2.0 * zr * zi + ci;
                zr = zr2 - zi2 + cr;
                zr2 = zr * zr;
                zi2 = zi * zi;
                n++;
            }
            row[px] = (zr2 + zi2 <= 4.0) ? 0 : pal[(size_t)n % npal];
        }
    }
}

int main(int argc, char **argv)
{
    long tile = -1, of = -1, w = 1024, h = 768, iters = 500, y0, y1;
    const char *out_path = NULL;
    static unsigned char pal[MAX_PALETTE];
    size_t npal;
    unsigned char *pixels;
    FILE *f;
    int i;

    xw_prog = "mandel";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        long *dst = NULL, lo = 1, hi = MAX_SIDE;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--tile") == 0) {
            dst = &tile, lo = 0, hi = MAX_SIDE - 1;
        } else if (strcmp(a, "--of") == 0) {
            dst = &of;
        } else if (strcmp(a, "--width") == 0) {
            dst = &w;
        } else if (strcmp(a, "--height") == 0) {
            dst = &h;
        } else if (strcmp(a, "--iter") == 0) {
            dst = &iters, hi = MAX_ITER;
        } else if (a[0] == '-' && a[1] != '\0') {
            xw_usage_error(usage, "unknown option %s", a);
        } else {
            if (out_path)
                xw_usage_error(usage, "more than one output file (%s, %s)", out_path, a);
            out_path = a;
            continue;
        }
        if (i + 1 >= argc)
            xw_usage_error(usage, "%s needs a value", a);
        if (xw_parse_long(argv[i + 1], lo, hi, dst) != 0)
            xw_usage_error(usage, "%s expects an integer in [%ld, %ld], got \"%s\"", a, lo, hi,
                           argv[i + 1]);
        i++;
    }
    if (tile < 0 || of < 0)
        xw_usage_error(usage, "--tile and --of are required");
    if (!out_path)
        xw_usage_error(usage, "missing output file");
    if (tile >= of)
        xw_usage_error(usage, "--tile %ld is out of range for --of %ld (tiles are 0..%ld)", tile,
                       of, of - 1);
    if (of > h)
        xw_usage_error(usage, "--of %ld is more than the image height %ld: some bands would be empty",
                       of, h);

    load_palette(pal, &npal);
    xw_band(tile, of, h, &y0, &y1);
    pixels = xw_malloc((size_t)(y1 - y0) * (size_t)w);
    render(pixels, w, h, y0, y1, iters, pal, npal);

    f = xw_open_out(out_path);
    fprintf(f, "P5\n# xwch-tile %ld %ld %ld %ld\n%ld %ld\n255\n", tile, of, w, h, w, y1 - y0);
    fwrite(pixels, 1, (size_t)(y1 - y0) * (size_t)w, f);
    xw_close_out(f, out_path);
    free(pixels);
    return 0;
}
