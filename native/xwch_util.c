/* xwch_util.c - see xwch_util.h. */
#define _POSIX_C_SOURCE 200809L

#include "xwch_util.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/types.h>

const char *xw_prog = "xwch";

void xw_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: ", xw_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(XW_EXIT_ERROR);
}

void xw_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "%s: ", xw_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    exit(XW_EXIT_USAGE);
}

void *xw_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        xw_die("out of memory (allocating %lu bytes)", (unsigned long)n);
    return p;
}

void *xw_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        xw_die("out of memory (allocating %lu bytes)", (unsigned long)n);
    return q;
}

char *xw_strndup(const char *s, size_t n)
{
    char *p = xw_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *xw_strdup(const char *s)
{
    return xw_strndup(s, strlen(s));
}

int xw_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

unsigned char *xw_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    size_t cap = 65536, n = 0, got;
    if (!f)
        xw_die("cannot open %s: %s", path, strerror(errno));
    buf = xw_malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > ((size_t)-1) / 2)
                xw_die("%s is too large", path);
            cap *= 2;
            buf = xw_realloc(buf, cap);
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        xw_die("cannot read %s: %s", path, strerror(errno));
    fclose(f);
    *len = n;
    return buf;
}

FILE *xw_open_out(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        xw_die("cannot create %s: %s", path, strerror(errno));
    return f;
}

void xw_close_out(FILE *f, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (bad) {
        int e = errno;
        remove(path);
        xw_die("cannot write %s: %s", path, strerror(e));
    }
}

/* ---- directory walk ---------------------------------------------------------------------- */

typedef struct {
    char **items;
    size_t n, cap;
} path_list;

static void list_push(path_list *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = xw_realloc(l->items, l->cap * sizeof *l->items);
    }
    l->items[l->n++] = s;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = xw_malloc(a + b + 2);
    memcpy(p, dir, a);
    if (a > 0 && dir[a - 1] == '/')
        a--; /* avoid "dir//name" */
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

#define XW_MAX_DEPTH 64 /* guards against symbolic-link loops */

static void walk(const char *dir, const char *suffix, path_list *out, int depth)
{
    DIR *d;
    struct dirent *e;
    if (depth > XW_MAX_DEPTH)
        xw_die("%s: directories nested too deeply (a symbolic-link loop?)", dir);
    d = opendir(dir);
    if (!d)
        xw_die("cannot read directory %s: %s", dir, strerror(errno));
    for (;;) {
        struct stat st;
        char *path;
        errno = 0;
        e = readdir(d);
        if (!e) {
            if (errno)
                xw_die("cannot read directory %s: %s", dir, strerror(errno));
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        path = join(dir, e->d_name);
        if (stat(path, &st) != 0)
            xw_die("cannot access %s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            walk(path, suffix, out, depth + 1);
            free(path);
        } else if (S_ISREG(st.st_mode) && ends_with(e->d_name, suffix)) {
            list_push(out, path);
        } else {
            free(path);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **xw_find_files(const char *dir, const char *suffix, size_t *count)
{
    path_list l = {NULL, 0, 0};
    struct stat st;
    if (stat(dir, &st) != 0)
        xw_die("cannot access %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        xw_die("%s is not a directory", dir);
    walk(dir, suffix, &l, 0);
    if (l.n > 1)
        qsort(l.items, l.n, sizeof *l.items, cmp_str);
    *count = l.n;
    return l.items;
}

void xw_free_list(char **list, size_t count)
{
    size_t i;
    for (i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

void xw_band(long i, long n, long h, long *y0, long *y1)
{
    /* 64-bit intermediate: h and n are at most a few tens of thousands. */
    *y0 = (long)(((long long)i * h) / n);
    *y1 = (long)(((long long)(i + 1) * h) / n);
}

/* ---- count table ------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

void xw_counts_init(xw_counts *t)
{
    t->cap = 1024;
    t->used = 0;
    t->slots = xw_malloc(t->cap * sizeof *t->slots);
    memset(t->slots, 0, t->cap * sizeof *t->slots);
}

void xw_counts_free(xw_counts *t)
{
    size_t i;
    for (i = 0; i < t->cap; i++)
        free(t->slots[i].key);
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

static void grow(xw_counts *t)
{
    size_t old_cap = t->cap, i;
    xw_count_entry *old = t->slots;
    if (old_cap > ((size_t)-1) / (4 * sizeof *old))
        xw_die("too many distinct words");
    t->cap = old_cap * 2;
    t->slots = xw_malloc(t->cap * sizeof *t->slots);
    memset(t->slots, 0, t->cap * sizeof *t->slots);
    for (i = 0; i < old_cap; i++) {
        if (old[i].key) {
            size_t j = (size_t)old[i].hash & (t->cap - 1);
            while (t->slots[j].key)
                j = (j + 1) & (t->cap - 1);
            t->slots[j] = old[i];
        }
    }
    free(old);
}

int xw_counts_add(xw_counts *t, const char *key, size_t len, uint64_t n)
{
    uint64_t h = fnv1a(key, len);
    size_t j;
    if ((t->used + 1) * 2 > t->cap) /* keep the load factor at most 1/2 */
        grow(t);
    j = (size_t)h & (t->cap - 1);
    while (t->slots[j].key) {
        xw_count_entry *e = &t->slots[j];
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            if (e->count > UINT64_MAX - n)
                return -1;
            e->count += n;
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
    t->slots[j].key = xw_strndup(key, len);
    t->slots[j].len = len;
    t->slots[j].count = n;
    t->slots[j].hash = h;
    t->used++;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const xw_count_entry *x = *(const xw_count_entry *const *)a;
    const xw_count_entry *y = *(const xw_count_entry *const *)b;
    return strcmp(x->key, y->key);
}

void xw_counts_write(const xw_counts *t, const char *path)
{
    xw_count_entry **v = xw_malloc(t->used * sizeof *v);
    size_t i, k = 0;
    FILE *f;
    for (i = 0; i < t->cap; i++)
        if (t->slots[i].key)
            v[k++] = &t->slots[i];
    if (k > 1)
        qsort(v, k, sizeof *v, cmp_entry);
    f = xw_open_out(path);
    for (i = 0; i < k; i++)
        fprintf(f, "%s\t%" PRIu64 "\n", v[i]->key, v[i]->count);
    xw_close_out(f, path);
    free(v);
}

double xw_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        xw_die("clock_gettime failed: %s", strerror(errno));
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void xw_doze(double seconds)
{
    struct timespec req, rem;
    req.tv_sec = (time_t)seconds;
    req.tv_nsec = (long)((seconds - (double)req.tv_sec) * 1e9);
    if (req.tv_nsec > 999999999L)
        req.tv_nsec = 999999999L;
    while (nanosleep(&req, &rem) != 0) {
        if (errno != EINTR)
            xw_die("nanosleep failed: %s", strerror(errno));
        req = rem;
    }
}
