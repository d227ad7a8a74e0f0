/*
 * xwch-launch: the attempt launcher of xwch.worker.launcher, in C.
 *
 *     xwch-launch [--sha256 HEX] [--known-identity DEV:INO:CTIME_NS:SIZE] [--user UID:GID]
 *                 [--writable DIR] [--processes N] [--status-fd FD] [--cwd DIR] -- PROGRAM [ARGS...]
 *
 * Same options, same steps, same order, same messages and exit statuses as the Python launcher
 * (worker/launcher.py holds the contract and its reasons; keep the two in step). What this adds
 * is speed: the worker starts it with posix_spawn, which copies no page table, and it execs the
 * program a few hundred microseconds later, where forking a Python process and running the
 * launcher's steps in Python cost a few milliseconds of CPU on every attempt. --cwd exists
 * because posix_spawn cannot change directory portably: the launcher does it first.
 *
 * The worker compiles this file on first use (xwch.worker.native); only libc and the kernel's
 * syscalls are used, so any C99 compiler of a Linux or BSD system builds it. SHA-256 is
 * implemented here from FIPS 180-4 rather than linked from a crypto library that a volunteer's
 * machine may lack.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#define EXIT_CANNOT_EXECUTE 126
#define EXIT_NOT_FOUND 127
#define LIMIT_PREFIX "XWCH_LIMIT_"
#define MESSAGE_MAX 4096

extern char **environ;

static int status_fd = -1;
/* In a child of the spawn server (--serve): the request it serves, named in its refusal. */
static long request_id = -1;

/* ---- Reporting: one JSON line on the status pipe, one line on standard error ---------------- */

static void json_escape(const char *in, char *out, size_t room) {
    size_t n = 0;
    for (; *in && n + 7 < room; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, room - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
}

static void write_all(int fd, const char *data, size_t size) {
    while (size > 0) {
        ssize_t written = write(fd, data, size);
        if (written < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data += written;
        size -= (size_t)written;
    }
}

/* Reports why the program cannot start and exits with ``code``. */
static void refuse(int code, const char *kind, const char *format, ...) {
    char message[MESSAGE_MAX], escaped[MESSAGE_MAX * 2], line[MESSAGE_MAX * 2 + 64];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    int n = snprintf(line, sizeof line, "xwch-launcher: %s\n", message);
    write_all(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    if (status_fd >= 0) {
        json_escape(message, escaped, sizeof escaped);
        if (request_id >= 0)
            n = snprintf(line, sizeof line, "{\"id\": %ld, \"kind\": \"%s\", \"message\": \"%s\"}\n",
                         request_id, kind, escaped);
        else
            n = snprintf(line, sizeof line, "{\"kind\": \"%s\", \"message\": \"%s\"}\n", kind,
                         escaped);
        write_all(status_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
    _exit(code);
}

#define SANDBOX "sandbox"
#define DIGEST "digest"
#define EXEC "exec"

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------ */

typedef struct {
    uint32_t state[8];
    uint64_t length;
    unsigned char block[64];
    size_t used;
} sha256_t;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_compress(uint32_t state[8], const unsigned char block[64]) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[t] +
                      w[t];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

/* SHA-256 with the CPU's SHA extensions (x86-64), where it has them: about five times the
 * portable code's speed here. A launcher checks its program's bytes before every attempt, so a big
 * program costs this on every attempt. */
#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 5)
#define HAVE_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>

static int cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid(1, a, b, c, d);
    if (!(c & bit_SSSE3) || !(c & bit_SSE4_1)) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 29)) != 0; /* SHA */
}

__attribute__((target("sha,ssse3,sse4.1"))) static void
sha256_blocks_ni(uint32_t state[8], const unsigned char *data, size_t blocks) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);
    __m128i state1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);       /* CDGH */
    for (; blocks > 0; blocks--, data += 64) {
        __m128i abef = state0, cdgh = state1, w[4];
        for (int g = 0; g < 16; g++) {
            __m128i words;
            if (g < 4) {
                words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), swap);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time. */
                __m128i w7 = _mm_alignr_epi8(w[(g - 1) & 3], w[(g - 2) & 3], 4);
                words = _mm_sha256msg1_epu32(w[g & 3], w[(g - 3) & 3]);
                words = _mm_sha256msg2_epu32(_mm_add_epi32(words, w7), w[(g - 1) & 3]);
            }
            w[g & 3] = words;
            __m128i message = _mm_add_epi32(words, _mm_loadu_si128((const __m128i *)&K[4 * g]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, message);
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(message, 0x0E));
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }
    tmp = _mm_shuffle_epi32(state0, 0x1B);       /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);    /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0); /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}
#endif

/* Whole blocks: with the SHA extensions where the CPU has them. Asking the CPU costs a few
 * cpuid, which a hypervisor traps (6-7 us each measured on a VM): only asked, once, for runs of
 * at least 8 KiB, where the extensions save more than that. */
static void sha256_blocks(uint32_t state[8], const unsigned char *data, size_t blocks) {
#ifdef HAVE_SHA_NI
    static int has_sha = -1;
    if (blocks >= 128 && has_sha < 0) has_sha = cpu_has_sha();
    if (blocks >= 128 && has_sha) {
        sha256_blocks_ni(state, data, blocks);
        return;
    }
#endif
    for (; blocks > 0; blocks--, data += 64) sha256_compress(state, data);
}

static void sha256_init(sha256_t *s) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->state, initial, sizeof initial);
    s->length = 0;
    s->used = 0;
}

static void sha256_update(sha256_t *s, const unsigned char *data, size_t size) {
    s->length += size;
    if (s->used > 0) {
        size_t take = 64 - s->used < size ? 64 - s->used : size;
        memcpy(s->block + s->used, data, take);
        s->used += take;
        data += take;
        size -= take;
        if (s->used < 64) return;
        sha256_blocks(s->state, s->block, 1);
        s->used = 0;
    }
    sha256_blocks(s->state, data, size / 64);
    data += size - size % 64;
    size %= 64;
    memcpy(s->block, data, size);
    s->used = size;
}

static void sha256_hex(sha256_t *s, char hex[65]) {
    uint64_t bits = s->length * 8;
    unsigned char pad[72] = {0x80};
    size_t pad_size = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++) pad[pad_size + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, pad_size + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->state[i]);
}

/* ---- The steps ------------------------------------------------------------------------------ */

/* A file's identity (worker/program_identity.py): what --known-identity names. */
typedef struct {
    unsigned long long device, inode, ctime_ns, size;
} identity_t;

typedef struct {
    const char *sha256, *writable, *cwd;
    int has_user, has_processes, has_trust;
    identity_t trust;
    uid_t uid;
    gid_t gid;
    long processes;
    char **command;
} options_t;

static int parse_long(const char *text, long *value) {
    char *end;
    /* Python's int() takes surrounding blanks and a sign; so do we. */
    while (isspace((unsigned char)*text)) text++;
    if (*text == '\0') return 0;
    errno = 0;
    *value = strtol(text, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    return errno == 0 && *end == '\0';
}

/* Four decimal numbers joined by colons, as Python's parse_identity takes them. */
static int parse_identity(const char *text, identity_t *identity) {
    unsigned long long *fields[4] = {&identity->device, &identity->inode, &identity->ctime_ns,
                                     &identity->size};
    for (int i = 0; i < 4; i++) {
        if (!isdigit((unsigned char)*text)) return 0;
        char *end;
        errno = 0;
        *fields[i] = strtoull(text, &end, 10);
        if (errno != 0 || *end != (i == 3 ? '\0' : ':')) return 0;
        text = end + (i < 3);
    }
    return 1;
}

static void parse_options(int argc, char **argv, options_t *o) {
    int split = -1, status = -1;
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) {
            split = i;
            break;
        }
    if (split < 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX,
               "usage: xwch-launch [OPTIONS] -- PROGRAM [ARGS...]");
    if (split + 1 >= argc) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "no program to run");
    o->command = argv + split + 1;
    if ((split - 1) % 2) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "option without a value: %s", argv[split - 1]);
    for (int i = 1; i < split; i += 2) {
        const char *name = argv[i], *value = argv[i + 1];
        long number;
        if (strcmp(name, "--sha256") == 0) {
            o->sha256 = value;
        } else if (strcmp(name, "--writable") == 0) {
            o->writable = value;
        } else if (strcmp(name, "--cwd") == 0) {
            o->cwd = value;
        } else if (strcmp(name, "--known-identity") == 0) {
            if (!parse_identity(value, &o->trust))
                refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "bad value for %s: '%s'", name, value);
            o->has_trust = 1;
        } else if (strcmp(name, "--user") == 0) {
            const char *colon = strchr(value, ':');
            long uid, gid;
            char head[64];
            size_t head_size = colon ? (size_t)(colon - value) : 0;
            if (!colon || head_size >= sizeof head || strchr(colon + 1, ':'))
                refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "bad value for %s: '%s'", name, value);
            memcpy(head, value, head_size);
            head[head_size] = '\0';
            if (!parse_long(head, &uid) || !parse_long(colon + 1, &gid))
                refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "bad value for %s: '%s'", name, value);
            o->has_user = 1;
            o->uid = (uid_t)uid;
            o->gid = (gid_t)gid;
        } else if (strcmp(name, "--processes") == 0) {
            if (!parse_long(value, &number))
                refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "bad value for %s: '%s'", name, value);
            o->has_processes = 1;
            o->processes = number;
        } else if (strcmp(name, "--status-fd") == 0) {
            if (!parse_long(value, &number))
                refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "bad value for %s: '%s'", name, value);
            status = (int)number;
        } else {
            refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "unknown option %s", name);
        }
    }
    /* Used once the options are known good, as the Python launcher does. Closed by a successful
     * exec: the executor hears nothing unless something failed. */
    status_fd = status;
    if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC);
}

typedef struct {
    const char *name;
    int resource;
} limit_name_t;

static const limit_name_t LIMITS[] = {
    {"CPU", RLIMIT_CPU},         {"FSIZE", RLIMIT_FSIZE},   {"DATA", RLIMIT_DATA},
    {"STACK", RLIMIT_STACK},     {"CORE", RLIMIT_CORE},     {"NOFILE", RLIMIT_NOFILE},
    {"AS", RLIMIT_AS},
#ifdef RLIMIT_RSS
    {"RSS", RLIMIT_RSS},
#endif
#ifdef RLIMIT_NPROC
    {"NPROC", RLIMIT_NPROC},
#endif
#ifdef RLIMIT_MEMLOCK
    {"MEMLOCK", RLIMIT_MEMLOCK},
#endif
#ifdef RLIMIT_LOCKS
    {"LOCKS", RLIMIT_LOCKS},
#endif
#ifdef RLIMIT_SIGPENDING
    {"SIGPENDING", RLIMIT_SIGPENDING},
#endif
#ifdef RLIMIT_MSGQUEUE
    {"MSGQUEUE", RLIMIT_MSGQUEUE},
#endif
#ifdef RLIMIT_NICE
    {"NICE", RLIMIT_NICE},
#endif
#ifdef RLIMIT_RTPRIO
    {"RTPRIO", RLIMIT_RTPRIO},
#endif
#ifdef RLIMIT_RTTIME
    {"RTTIME", RLIMIT_RTTIME},
#endif
};

#define MAX_LIMITS 64

typedef struct {
    int resource;
    rlim_t value;
} limit_t;

/* The XWCH_LIMIT_ variables, checked, in the order of the environment. */
static size_t parse_limits(limit_t *limits) {
    size_t count = 0;
    for (char **entry = environ; *entry; entry++) {
        if (strncmp(*entry, LIMIT_PREFIX, strlen(LIMIT_PREFIX)) != 0) continue;
        const char *equals = strchr(*entry, '=');
        if (!equals) continue;
        const char *name = *entry + strlen(LIMIT_PREFIX);
        size_t name_size = (size_t)(equals - name);
        long value;
        if (!parse_long(equals + 1, &value))
            refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "%.*s must be an integer, not '%s'",
                   (int)(equals - *entry), *entry, equals + 1);
        if (value < 0)
            refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "%.*s must not be negative",
                   (int)(equals - *entry), *entry);
        int found = -1;
        for (size_t i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++)
            if (strlen(LIMITS[i].name) == name_size && strncmp(LIMITS[i].name, name, name_size) == 0)
                found = LIMITS[i].resource;
        if (found < 0)
            refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "unknown resource limit %.*s",
                   (int)(equals - *entry), *entry);
        if (count == MAX_LIMITS) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "too many resource limits");
        limits[count].resource = found;
        limits[count].value = (rlim_t)value;
        count++;
    }
    return count;
}

static void apply_limit(int resource, rlim_t value) {
    struct rlimit current;
    if (getrlimit(resource, &current) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "cannot set the attempt up: getrlimit: %s",
               strerror(errno));
    /* An unprivileged process may lower its hard limit, never raise it. */
    if (current.rlim_max != RLIM_INFINITY && value > current.rlim_max) value = current.rlim_max;
    struct rlimit wanted = {value, value};
    if (setrlimit(resource, &wanted) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "cannot set the attempt up: setrlimit: %s",
               strerror(errno));
}

static void verify_program(const char *path, const char *expected) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        refuse(EXIT_CANNOT_EXECUTE, EXEC, "cannot read the program %s: %s", path, strerror(errno));
    sha256_t s;
    sha256_init(&s);
    static unsigned char buffer[1 << 16];
    for (;;) {
        ssize_t got = read(fd, buffer, sizeof buffer);
        if (got < 0) {
            if (errno == EINTR) continue;
            refuse(EXIT_CANNOT_EXECUTE, EXEC, "cannot read the program %s: %s", path,
                   strerror(errno));
        }
        if (got == 0) break;
        sha256_update(&s, buffer, (size_t)got);
    }
    close(fd);
    char actual[65];
    sha256_hex(&s, actual);
    if (strcmp(actual, expected) != 0)
        refuse(EXIT_CANNOT_EXECUTE, DIGEST,
               "the program's bytes do not match its digest %s (they hash to %s); refusing to "
               "run it",
               expected, actual);
}

/* Whether ``path`` is still the file the worker hashed: the same identity, a regular file of our
 * own user that nobody may write (worker/program_identity.py says why that is enough). */
static int identity_holds(const char *path, const identity_t *trusted) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    unsigned long long ctime_ns =
        (unsigned long long)st.st_ctim.tv_sec * 1000000000ULL + (unsigned long long)st.st_ctim.tv_nsec;
    return S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 0222) &&
           (unsigned long long)st.st_dev == trusted->device &&
           (unsigned long long)st.st_ino == trusted->inode && ctime_ns == trusted->ctime_ns &&
           (unsigned long long)st.st_size == trusted->size;
}

/* Tasks (processes and threads, as RLIMIT_NPROC counts them) that ``uid`` runs; -1: unknown.
 *
 * Only the status of a process whose /proc folder belongs to ``uid`` is read: that folder
 * belongs to the process's effective user, and generating every process's status cost about a
 * millisecond of CPU per attempt on a machine of a hundred processes, a quarter of what a trivial
 * task costs in all. Missed: processes of ``uid`` whose effective user differs or that are not
 * dumpable (a daemon that dropped to ``uid``); the attempt then gets that many processes fewer
 * than asked (never more). Its own tasks are seen while they keep their user (with --writable,
 * NO_NEW_PRIVS makes sure of it), an exec making them dumpable again. */
static long tasks_of_user(uid_t uid) {
    DIR *proc = opendir("/proc");
    if (!proc) return -1;
    int proc_fd = dirfd(proc);
    long count = 0;
    struct dirent *entry;
    struct stat folder;
    char path[300], line[256];
    while ((entry = readdir(proc))) {
        if (!isdigit((unsigned char)entry->d_name[0])) continue;
        if (fstatat(proc_fd, entry->d_name, &folder, 0) != 0 || folder.st_uid != uid) continue;
        snprintf(path, sizeof path, "/proc/%s/status", entry->d_name);
        FILE *status = fopen(path, "re");
        if (!status) continue;
        long real_uid = -1, threads = 0;
        while (fgets(line, sizeof line, status)) {
            if (strncmp(line, "Uid:", 4) == 0) real_uid = strtol(line + 4, NULL, 10);
            else if (strncmp(line, "Threads:", 8) == 0) {
                threads = strtol(line + 8, NULL, 10);
                break;
            }
        }
        fclose(status);
        if (real_uid == (long)uid) count += threads > 0 ? threads : 1;
    }
    closedir(proc);
    return count;
}

#ifdef __linux__
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif

#define ACCESS_FS_EXECUTE (1ULL << 0)
#define ACCESS_FS_WRITE_FILE (1ULL << 1)
#define ACCESS_FS_READ_FILE (1ULL << 2)
#define ACCESS_FS_REFER (1ULL << 13)
#define ACCESS_FS_TRUNCATE (1ULL << 14)
/* WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, DIR, REG, SOCK, FIFO, BLOCK, SYM */
#define WRITE_V1 (0x1FF2ULL)
#define FILE_RIGHTS (ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE)
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define SCOPE_SIGNAL (1ULL << 1)

struct ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};

struct __attribute__((packed)) path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
};

static const char *const WRITABLE_DEVICES[] = {"/dev/null", "/dev/zero", "/dev/full",
                                               "/dev/random", "/dev/urandom"};

#define CONFINE "cannot confine writes to the working directory: "

static void allow(int ruleset, const char *path, uint64_t rights) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "%s: %s", path, strerror(errno));
    struct path_beneath_attr rule = {rights, fd};
    if (syscall(__NR_landlock_add_rule, ruleset, 1 /* PATH_BENEATH */, &rule, 0) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "landlock_add_rule %s: %s", path,
               strerror(errno));
    close(fd);
}

static void restrict_writes(const char *writable) {
    long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, 1 /* VERSION */);
    if (abi < 1) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "this kernel offers no Landlock");
    uint64_t handled = WRITE_V1;
    if (abi >= 2) handled |= ACCESS_FS_REFER;
    if (abi >= 3) handled |= ACCESS_FS_TRUNCATE;
    struct ruleset_attr attr = {handled, 0,
                                abi >= 6 ? (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) : 0};
    long ruleset =
        syscall(__NR_landlock_create_ruleset, &attr, abi >= 6 ? sizeof attr : (size_t)8, 0);
    if (ruleset < 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "landlock_create_ruleset: %s",
               strerror(errno));
    allow((int)ruleset, writable, handled);
    for (size_t i = 0; i < sizeof WRITABLE_DEVICES / sizeof WRITABLE_DEVICES[0]; i++)
        if (access(WRITABLE_DEVICES[i], F_OK) == 0)
            allow((int)ruleset, WRITABLE_DEVICES[i], handled & FILE_RIGHTS);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "prctl(PR_SET_NO_NEW_PRIVS): %s",
               strerror(errno));
    if (syscall(__NR_landlock_restrict_self, ruleset, 0) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, CONFINE "landlock_restrict_self: %s",
               strerror(errno));
    close((int)ruleset);
}
#else
static void restrict_writes(const char *writable) {
    (void)writable;
    refuse(EXIT_CANNOT_EXECUTE, SANDBOX,
           "cannot confine writes to the working directory: this kernel offers no Landlock");
}
#endif

/* The environment without the XWCH_LIMIT_ variables: they are for us, not the program. */
static char **program_environment(void) {
    size_t count = 0;
    for (char **entry = environ; *entry; entry++) count++;
    char **env = calloc(count + 1, sizeof *env);
    if (!env) refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "cannot set the attempt up: out of memory");
    size_t kept = 0;
    for (char **entry = environ; *entry; entry++)
        if (strncmp(*entry, LIMIT_PREFIX, strlen(LIMIT_PREFIX)) != 0) env[kept++] = *entry;
    return env;
}

/* Closes every descriptor but 0, 1, 2 and ``keep``: the worker starts us with posix_spawn,
 * which passes on whatever it has open without close-on-exec. */
static void close_inherited(int keep) {
#ifdef SYS_close_range
    int done;
    if (keep <= 2)
        done = syscall(SYS_close_range, 3U, ~0U, 0U) == 0;
    else
        done = (keep == 3 || syscall(SYS_close_range, 3U, (unsigned)keep - 1, 0U) == 0) &&
               syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U) == 0;
    if (done) return;
#endif
    DIR *listing = opendir("/proc/self/fd");
    if (!listing) return;
    int fds[4096], count = 0;
    struct dirent *entry;
    while ((entry = readdir(listing)) && count < 4096) {
        if (!isdigit((unsigned char)entry->d_name[0])) continue;
        int fd = atoi(entry->d_name);
        if (fd > 2 && fd != keep && fd != dirfd(listing)) fds[count++] = fd;
    }
    closedir(listing);
    for (int i = 0; i < count; i++) close(fds[i]);
}

/* Ignored signals survive exec: a task starts with every signal at its default. */
static void default_signals(void) {
    for (int signum = 1; signum < NSIG; signum++) {
        struct sigaction action;
        if (sigaction(signum, NULL, &action) == 0 && action.sa_handler == SIG_IGN)
            signal(signum, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Everything from the working directory to the exec (see worker/launcher.py). */
static void become_program(options_t o) {
    limit_t limits[MAX_LIMITS + 1];
    if (o.cwd && chdir(o.cwd) != 0)
        refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "cannot enter the working directory %s: %s", o.cwd,
               strerror(errno));
    size_t count = parse_limits(limits);
    /* A session of our own: the executor kills, stops and continues the whole group at once. */
    setsid();
    if (o.sha256 && !(o.has_trust && identity_holds(o.command[0], &o.trust)))
        verify_program(o.command[0], o.sha256);
    if (o.has_processes) {
        uid_t uid = o.has_user ? o.uid : getuid();
        /* Never for root: the kernel does not hold root to RLIMIT_NPROC. */
        long running = uid == 0 ? -1 : tasks_of_user(uid);
        if (running >= 0) {
            size_t i;
            for (i = 0; i < count && limits[i].resource != RLIMIT_NPROC; i++)
                ;
            limits[i].resource = RLIMIT_NPROC;
            limits[i].value = (rlim_t)(running + o.processes);
            if (i == count) count++;
        }
    }
    for (size_t i = 0; i < count; i++) apply_limit(limits[i].resource, limits[i].value);
    if (o.writable) restrict_writes(o.writable);
    if (o.has_user) {
        if (setgroups(0, NULL) != 0 || setgid(o.gid) != 0 || setuid(o.uid) != 0)
            refuse(EXIT_CANNOT_EXECUTE, SANDBOX, "cannot set the attempt up: %s",
                   strerror(errno));
    }
    /* A task writing to a closed pipe dies of it, as when started from a shell. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGXFSZ, SIG_DFL);
    default_signals();
    execve(o.command[0], o.command, program_environment());
    if (errno == ENOENT) refuse(EXIT_NOT_FOUND, EXEC, "%s: not found", o.command[0]);
    refuse(EXIT_CANNOT_EXECUTE, EXEC, "cannot run %s: %s", o.command[0], strerror(errno));
}

#include "launch_server.h"

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--serve") == 0) return serve(argv[2]);
    options_t o;
    parse_options(argc, argv, &o);
    close_inherited(status_fd);
    become_program(o);
    return EXIT_CANNOT_EXECUTE;
}
