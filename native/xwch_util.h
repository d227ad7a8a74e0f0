/*
 * xwch_util.h - small helpers shared by the XWCH example programs.
 *
 * C99 plus a few POSIX.1-2008 calls (opendir/readdir/stat for directory walks,
 * clock_gettime/nanosleep in spin). Only libc and libm are used.
 */
#ifndef XWCH_UTIL_H
#define XWCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit statuses shared by every program. */
#define XW_EXIT_ERROR 1 /* bad input, I/O error, ... */
#define XW_EXIT_USAGE 2 /* bad command line */

/* Name used as the prefix of every error message ("mandel: ..."). Set it first thing in main. */
extern const char *xw_prog;

/* Print "PROG: message\n" to stderr and exit with XW_EXIT_ERROR. */
void xw_die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

/* Print "PROG: message\n" then the usage text to stderr and exit with XW_EXIT_USAGE. */
void xw_usage_error(const char *usage, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3), noreturn))
#endif
    ;

void *xw_malloc(size_t n);
void *xw_realloc(void *p, size_t n);
char *xw_strdup(const char *s);
char *xw_strndup(const char *s, size_t n);

/* Parse a whole decimal integer in [min, max]; returns 0 on success, -1 otherwise. */
int xw_parse_long(const char *s, long min, long max, long *out);

/* Read a whole file into memory (binary). Dies with a clear message on error. */
unsigned char *xw_read_file(const char *path, size_t *len);

/* Open OUT for writing ("wb"); dies on error. */
FILE *xw_open_out(const char *path);
/* Flush and close OUT; on any write error removes the file and dies. */
void xw_close_out(FILE *f, const char *path);

/*
 * Every regular file under DIR (recursively, following symbolic links) whose name ends with
 * SUFFIX, as a sorted array of "DIR/.../name" paths. Dies if DIR is not a readable directory.
 */
char **xw_find_files(const char *dir, const char *suffix, size_t *count);
void xw_free_list(char **list, size_t count);

/* Seconds on the monotonic clock (for durations); dies if there is none. */
double xw_now(void);
/* Sleep SECONDS (fractional), through signal interruptions; dies on error. */
void xw_doze(double seconds);

/* Rows [*y0, *y1) of band I of N of an image H rows high (bands differ by at most one row). */
void xw_band(long i, long n, long h, long *y0, long *y1);

/* A string -> uint64 count table (open addressing, grows as needed). */
typedef struct {
    char *key; /* NUL-terminated, owned by the table; NULL for an empty slot */
    size_t len;
    uint64_t count;
    uint64_t hash;
} xw_count_entry;

typedef struct {
    xw_count_entry *slots;
    size_t cap;  /* power of two */
    size_t used; /* number of keys */
} xw_counts;

void xw_counts_init(xw_counts *t);
void xw_counts_free(xw_counts *t);
/* Add N to KEY (LEN bytes, no NUL inside). Returns 0, or -1 if the count would overflow. */
int xw_counts_add(xw_counts *t, const char *key, size_t len, uint64_t n);
/* Write "key\tcount\n" lines sorted by key (byte order) to PATH; dies on error. */
void xw_counts_write(const xw_counts *t, const char *path);

#endif
