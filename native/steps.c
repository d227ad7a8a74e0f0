/*
 * steps - a long task that keeps a checkpoint and resumes from it (the checkpoint example).
 *
 * usage: steps [OPTIONS] DIR OUT
 *   --steps N            how many steps the whole task takes (default 40)
 *   --sleep SECONDS      each step waits this long (default 0.5)
 *   --work MILLIONS      each step also computes this many million iterations (default 0)
 *   --state-mib M        keep a state of M MiB in DIR/blob too (default 0: none)
 *   --change-percent P   each step changes P percent of that state (default 5)
 *
 * The step reached is kept in DIR/state ("step K\n"). Every file of DIR is written to a
 * temporary name and renamed over the old one, so DIR always holds a whole checkpoint. On start
 * it resumes from DIR/state if there is one, and says so on standard output ("steps: resumed
 * at step K" or "steps: started at step 0"); each step prints "steps: step I work SECONDS",
 * the wall time of its computation (what a checkpoint save may slow down). At the end OUT gets
 * "N steps done\n" (the same however often the task was interrupted).
 */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: steps [--steps N] [--sleep SECONDS] [--work MILLIONS] [--state-mib M]\n"
    "             [--change-percent P] DIR OUT\n"
    "  A task of N steps that keeps its progress in DIR and resumes from it.\n";

#define MIB (1024L * 1024L)

static volatile double sink;

static void work(long millions)
{
    double x = 1.0;
    long i, k;
    for (i = 0; i < millions; i++) {
        for (k = 0; k < 1000000; k++)
            x = x * 1.0000001 + 1e-9;
        if (x > 1e6)
            x = 1.0;
    }
    sink = x;
}

/* Write LEN bytes of DATA to DIR/NAME through DIR/NAME.tmp and a rename. */
static void replace_file(const char *dir, const char *name, const void *data, size_t len)
{
    size_t n = strlen(dir) + strlen(name) + 8;
    char *tmp = xw_malloc(n), *final = xw_malloc(n);
    FILE *f;
    snprintf(tmp, n, "%s/%s.tmp", dir, name);
    snprintf(final, n, "%s/%s", dir, name);
    f = xw_open_out(tmp);
    if (len > 0 && fwrite(data, 1, len, f) != len)
        xw_die("cannot write %s: %s", tmp, strerror(errno));
    xw_close_out(f, tmp);
    if (rename(tmp, final) != 0)
        xw_die("cannot rename %s to %s: %s", tmp, final, strerror(errno));
    free(tmp);
    free(final);
}

/* The step DIR/state says was reached, or 0 without one. */
static long resume_step(const char *dir, long steps)
{
    size_t n = strlen(dir) + 8, len;
    char *path = xw_malloc(n), *text;
    struct stat st;
    long step = 0;
    snprintf(path, n, "%s/state", dir);
    if (stat(path, &st) != 0) {
        free(path);
        return 0;
    }
    text = (char *)xw_read_file(path, &len);
    text = xw_realloc(text, len + 1);
    text[len] = '\0';
    if (sscanf(text, "step %ld", &step) != 1 || step < 0 || step > steps)
        xw_die("%s holds no step between 0 and %ld", path, steps);
    free(text);
    free(path);
    return step;
}

/* Deterministic bytes: the state depends only on the steps taken, not on interruptions. */
static uint32_t next_random(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed;
}

static unsigned char *load_blob(const char *dir, long mib)
{
    size_t n = strlen(dir) + 8, len = 0, size = (size_t)mib * MIB, i;
    char *path = xw_malloc(n);
    unsigned char *blob;
    struct stat st;
    uint32_t seed = 12345u;
    snprintf(path, n, "%s/blob", dir);
    if (stat(path, &st) == 0) {
        blob = xw_read_file(path, &len);
        if (len != size)
            xw_die("%s holds %zu bytes, not %zu", path, len, size);
        free(path);
        return blob;
    }
    free(path);
    blob = xw_malloc(size);
    for (i = 0; i + 4 <= size; i += 4) {
        uint32_t r = next_random(&seed);
        memcpy(blob + i, &r, 4);
    }
    return blob;
}

/* Change PERCENT of the blob, in regions of 1 MiB of new pseudo-random bytes at places chosen
 * by STEP (anywhere: not aligned to anything a checkpoint's chunks would be). */
static void change_blob(unsigned char *blob, long mib, long percent, long step)
{
    long regions = mib * percent / 100, r;
    uint32_t seed = (uint32_t)step * 2654435761u + 1u;
    size_t i;
    if (regions < 1 && percent > 0)
        regions = 1;
    for (r = 0; r < regions; r++) {
        size_t offset = (size_t)(next_random(&seed) % (uint32_t)((mib - 1) * MIB + 1));
        for (i = 0; i + 4 <= (size_t)MIB; i += 4) {
            uint32_t value = next_random(&seed);
            memcpy(blob + offset + i, &value, 4);
        }
    }
}

static double number(const char *text, const char *what, double max)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !(v >= 0.0) || v > max)
        xw_usage_error(usage, "%s must be a number between 0 and %g, got \"%s\"", what, max, text);
    return v;
}

int main(int argc, char **argv)
{
    long steps = 40, millions = 0, mib = 0, percent = 5, step, i;
    double sleep_seconds = 0.5;
    const char *pos[2] = {NULL, NULL};
    int npos = 0, a;
    unsigned char *blob = NULL;
    char line[32];

    xw_prog = "steps";
    for (a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (arg[0] == '-' && arg[1] == '-') {
            if (a + 1 >= argc)
                xw_usage_error(usage, "%s needs a value", arg);
            if (strcmp(arg, "--steps") == 0) {
                if (xw_parse_long(argv[++a], 1, 100000000L, &steps) != 0)
                    xw_usage_error(usage, "--steps must be a positive integer");
            } else if (strcmp(arg, "--sleep") == 0) {
                sleep_seconds = number(argv[++a], "--sleep", 86400.0);
            } else if (strcmp(arg, "--work") == 0) {
                if (xw_parse_long(argv[++a], 0, 1000000L, &millions) != 0)
                    xw_usage_error(usage, "--work must be an integer from 0 to 1000000");
            } else if (strcmp(arg, "--state-mib") == 0) {
                if (xw_parse_long(argv[++a], 0, 65536L, &mib) != 0)
                    xw_usage_error(usage, "--state-mib must be an integer from 0 to 65536");
            } else if (strcmp(arg, "--change-percent") == 0) {
                if (xw_parse_long(argv[++a], 0, 100L, &percent) != 0)
                    xw_usage_error(usage, "--change-percent must be an integer from 0 to 100");
            } else {
                xw_usage_error(usage, "unknown option %s", arg);
            }
            continue;
        }
        if (npos == 2)
            xw_usage_error(usage, "too many arguments");
        pos[npos++] = arg;
    }
    if (npos != 2)
        xw_usage_error(usage, "expected DIR and OUT");
    if (mkdir(pos[0], 0755) != 0 && errno != EEXIST)
        xw_die("cannot make %s: %s", pos[0], strerror(errno));

    step = resume_step(pos[0], steps);
    printf("steps: %s at step %ld\n", step > 0 ? "resumed" : "started", step);
    fflush(stdout);
    if (mib > 0)
        blob = load_blob(pos[0], mib);
    for (i = step; i < steps; i++) {
        double started = xw_now();
        work(millions);
        printf("steps: step %ld work %.4f\n", i, xw_now() - started);
        fflush(stdout);
        if (sleep_seconds > 0)
            xw_doze(sleep_seconds);
        if (blob != NULL) {
            change_blob(blob, mib, percent, i);
            replace_file(pos[0], "blob", blob, (size_t)mib * MIB);
        }
        snprintf(line, sizeof line, "step %ld\n", i + 1);
        replace_file(pos[0], "state", line, strlen(line));
    }
    {
        FILE *f = xw_open_out(pos[1]);
        fprintf(f, "%ld steps done\n", steps);
        xw_close_out(f, pos[1]);
    }
    free(blob);
    return 0;
}
