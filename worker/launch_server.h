/*
 * The spawn server: xwch-launch --serve FD starts a worker's attempts by forking itself.
 *
 * Included once by launch.c (one source to compile, one binary to build). Started once per
 * worker, it saves every attempt an exec of the launcher (a fork of this small process costs a
 * fraction of an exec), and the worker's reactor the posix_spawn it would otherwise block on,
 * the SIGCHLD it would reap, and a pipe: what the child refuses, it says on this socket.
 *
 * The conversation, on the Unix SOCK_SEQPACKET socket FD (the worker holds the other end), one
 * request or answer a message:
 *
 * - the worker asks ID NUL ARGC NUL ARG... NUL ENVC NUL NAME=VALUE... NUL (numbers in decimal,
 *   ARGs the launcher's options, "--", the program and its arguments), sending the attempt's
 *   standard output and error (pipes) as SCM_RIGHTS with it; standard input is /dev/null;
 * - the server answers {"id": ID, "pid": PID} once forked, or {"id": ID, "error": WHY};
 * - the child, if a step fails, sends {"id": ID, "kind": KIND, "message": WHY} (the launcher's
 *   status line, with its request) before it exits 126 or 127;
 * - the server answers {"id": ID, "status": WAIT_STATUS} once the child has exited and been
 *   reaped, and kills what is left of its process group.
 *
 * The server ends when the worker closes its end. Its children are attempts of the worker, which
 * kills them if the server is gone (nobody would tell it their end).
 */
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define REQUEST_MAX (256 * 1024)
#define REQUEST_FDS 2
#define ANSWER_MAX 512

static int wake_pipe[2] = {-1, -1};

static void on_child(int signum) {
    (void)signum;
    int saved = errno;
    ssize_t ignored = write(wake_pipe[1], "", 1);
    (void)ignored;
    errno = saved;
}

typedef struct {
    pid_t pid;
    long id;
} served_t;

static served_t *served;
static size_t served_count, served_room;

static void answer(int sock, const char *text) {
    /* Blocking: a worker that stops reading stops this server, as it should. */
    while (send(sock, text, strlen(text), MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void answer_error(int sock, long id, const char *why) {
    char escaped[ANSWER_MAX], text[ANSWER_MAX * 2];
    json_escape(why, escaped, sizeof escaped);
    snprintf(text, sizeof text, "{\"id\": %ld, \"error\": \"%s\"}\n", id, escaped);
    answer(sock, text);
}

static void reap(int sock) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        for (size_t i = 0; i < served_count; i++) {
            if (served[i].pid != pid) continue;
            /* What the program left running in the background ends with it, as the executor
             * would do on hearing its end (and before the pid could be anyone else's). */
            kill(-pid, SIGKILL);
            char text[ANSWER_MAX];
            snprintf(text, sizeof text, "{\"id\": %ld, \"status\": %d}\n", served[i].id, status);
            answer(sock, text);
            served[i] = served[--served_count];
            break;
        }
    }
}

/* The next NUL-terminated field of a request, or NULL past its end. */
static char *next_field(char **cursor, char *end) {
    char *field = *cursor;
    char *nul = field < end ? memchr(field, '\0', (size_t)(end - field)) : NULL;
    if (!nul) return NULL;
    *cursor = nul + 1;
    return field;
}

static int field_count(char **cursor, char *end, long most, long *count) {
    char *field = next_field(cursor, end);
    return field && parse_long(field, count) && *count >= 0 && *count <= most;
}

/* In the forked child: the attempt's descriptors, then the launcher's steps, then its program. */
static void become_attempt(int sock, int null_fd, const int fds[REQUEST_FDS], int argc,
                           char **argv, char **env) {
    signal(SIGCHLD, SIG_DFL);
    /* Above the targets first, so that no dup2 overwrites a source still needed. */
    int high[3] = {fcntl(null_fd, F_DUPFD_CLOEXEC, 16), fcntl(fds[0], F_DUPFD_CLOEXEC, 16),
                   fcntl(fds[1], F_DUPFD_CLOEXEC, 16)};
    for (int target = 0; target < 3; target++)
        if (high[target] < 0 || dup2(high[target], target) < 0) _exit(EXIT_CANNOT_EXECUTE);
    options_t o;
    parse_options(argc, argv, &o);
    /* The refusal goes to the worker through the server's socket, closed by the exec. */
    status_fd = sock;
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    close_inherited(status_fd);
    environ = env;
    become_program(o);
    _exit(EXIT_CANNOT_EXECUTE);
}

static void serve_request(int sock, int null_fd, char *request, size_t size, int *fds,
                          int fd_count, int truncated) {
    char *cursor = request, *end = request + size;
    long id, argc, envc;
    char *id_field = next_field(&cursor, end);
    if (!id_field || !parse_long(id_field, &id)) {
        fprintf(stderr, "xwch-launch --serve: ignoring a malformed request\n");
        return;
    }
    if (truncated) {
        answer_error(sock, id, "the request is too large");
        return;
    }
    if (fd_count != REQUEST_FDS) {
        answer_error(sock, id, "the request came without its descriptors");
        return;
    }
    /* Pointers into the request, which the child's copy of memory keeps. */
    static char *argv[REQUEST_MAX / 2 + 2], *env[REQUEST_MAX / 2 + 1];
    if (!field_count(&cursor, end, REQUEST_MAX / 2, &argc)) {
        answer_error(sock, id, "malformed request: argument count");
        return;
    }
    argv[0] = "xwch-launch";
    for (long i = 0; i < argc; i++)
        if (!(argv[i + 1] = next_field(&cursor, end))) {
            answer_error(sock, id, "malformed request: arguments");
            return;
        }
    argv[argc + 1] = NULL;
    if (!field_count(&cursor, end, REQUEST_MAX / 2, &envc)) {
        answer_error(sock, id, "malformed request: environment count");
        return;
    }
    for (long i = 0; i < envc; i++)
        if (!(env[i] = next_field(&cursor, end))) {
            answer_error(sock, id, "malformed request: environment");
            return;
        }
    env[envc] = NULL;
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        char why[ANSWER_MAX];
        snprintf(why, sizeof why, "cannot start the attempt: fork: %s", strerror(errno));
        answer_error(sock, id, why);
        return;
    }
    if (pid == 0) {
        request_id = id;
        become_attempt(sock, null_fd, fds, (int)argc + 1, argv, env);
    }
    if (served_count == served_room) {
        served_room = served_room ? 2 * served_room : 16;
        served = realloc(served, served_room * sizeof *served);
        if (!served) {
            fprintf(stderr, "xwch-launch --serve: out of memory\n");
            exit(1);
        }
    }
    served[served_count].pid = pid;
    served[served_count].id = id;
    served_count++;
    char text[ANSWER_MAX];
    snprintf(text, sizeof text, "{\"id\": %ld, \"pid\": %d}\n", id, (int)pid);
    answer(sock, text);
}

static int serve(const char *fd_text) {
    long fd_number;
    if (!parse_long(fd_text, &fd_number) || fd_number < 0) {
        fprintf(stderr, "usage: xwch-launch --serve FD\n");
        return 2;
    }
    int sock = (int)fd_number;
    /* Interrupting a terminal signals the whole group: the worker decides when attempts end,
     * and closes the socket to stop this server. */
    signal(SIGINT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0 || pipe(wake_pipe) != 0) {
        fprintf(stderr, "xwch-launch --serve: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(wake_pipe[i], F_SETFL, O_NONBLOCK);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_child;
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &action, NULL);
    static char request[REQUEST_MAX];
    for (;;) {
        struct pollfd polled[2] = {{sock, POLLIN, 0}, {wake_pipe[0], POLLIN, 0}};
        if (poll(polled, 2, -1) < 0 && errno != EINTR) {
            fprintf(stderr, "xwch-launch --serve: poll: %s\n", strerror(errno));
            return 1;
        }
        if (polled[1].revents) {
            char drained[64];
            while (read(wake_pipe[0], drained, sizeof drained) > 0)
                ;
        }
        reap(sock);
        if (!polled[0].revents) continue;
        union {
            struct cmsghdr header;
            char room[CMSG_SPACE(sizeof(int) * 8)];
        } control;
        struct iovec iov = {request, sizeof request - 1};
        struct msghdr message = {0};
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        message.msg_control = control.room;
        message.msg_controllen = sizeof control.room;
        ssize_t got = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fprintf(stderr, "xwch-launch --serve: recvmsg: %s\n", strerror(errno));
            return 1;
        }
        if (got == 0) return 0; /* the worker closed its end */
        int fds[8], fd_count = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n && fd_count < 8; i++)
                memcpy(&fds[fd_count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        request[got] = '\0';
        serve_request(sock, null_fd, request, (size_t)got, fds, fd_count,
                      (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0);
        for (int i = 0; i < fd_count; i++) close(fds[i]);
    }
}
