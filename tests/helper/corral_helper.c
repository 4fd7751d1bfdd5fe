/*
 * corral_helper: the test helper shared by tests/cpp (GoogleTest, via the CORRAL_HELPER
 * define) and tests/python (pytest, via the `helper` fixture). It is a real child process
 * whose behaviour is scripted on the command line as a sequence of steps run in order:
 *
 *     corral_helper print hello stderr oops listen 0 sleep 100
 *
 * Each step is a name followed by a fixed number of arguments (see STEPS below). The
 * whole command line is checked before anything runs. Single lines go out with one
 * write(2) each, so nothing sits in a stdio buffer when the process dies.
 *
 * Exit codes: 0 after the last step; 2 bad step, missing or malformed argument;
 * 3 listen/http failed; 4 notify failed; 5 any other step failed (file I/O, fork...).
 * `exit N`, `exit-on-count` and `exit-stamp` exit with the code they are given.
 *
 * C11 + POSIX, Linux only, libc only.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_BAD_STEP = 2, EXIT_LISTEN = 3, EXIT_NOTIFY = 4, EXIT_FAILED = 5 };

/* ---- output ----------------------------------------------------------------------------- */

/* Writes all of buf, retrying on EINTR, partial writes and a non-blocking fd. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        (void)poll(&p, 1, -1);
        continue;
      }
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* TEXT + "\n" in a single write, so concurrent writers never split a line. */
static void put_line(int fd, const char *text) {
  size_t len = strlen(text);
  char small[512];
  char *buf = len + 1 <= sizeof small ? small : malloc(len + 1);
  if (buf == NULL) return;
  memcpy(buf, text, len);
  buf[len] = '\n';
  (void)write_all(fd, buf, len + 1);
  if (buf != small) free(buf);
}

/* printf-style line (a newline is appended) in a single write. */
static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int fd, const char *fmt, ...) {
  char small[1024];
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    va_end(ap2);
    return;
  }
  char *buf = small;
  if ((size_t)n >= sizeof small) {
    buf = malloc((size_t)n + 1);
    if (buf == NULL) {
      va_end(ap2);
      return;
    }
    vsnprintf(buf, (size_t)n + 1, fmt, ap2);
  }
  va_end(ap2);
  put_line(fd, buf);
  if (buf != small) free(buf);
}

static _Noreturn void fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void fail(int code, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  say(STDERR_FILENO, "corral_helper: %s", buf);
  _exit(code);
}

/* ---- argument parsing ------------------------------------------------------------------- */

static long parse_long(const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    fail(EXIT_BAD_STEP, "bad number '%s'", s);
  return v;
}

static double parse_seconds(const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 1e9)
    fail(EXIT_BAD_STEP, "bad duration '%s'", s);
  return v;
}

static const struct {
  const char *name;
  int number;
} SIGNALS[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP}, {"ABRT", SIGABRT},   {"BUS", SIGBUS},     {"FPE", SIGFPE},
    {"KILL", SIGKILL}, {"USR1", SIGUSR1},   {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},   {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"STOP", SIGSTOP},   {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU}, {"URG", SIGURG},     {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"PWR", SIGPWR},   {"SYS", SIGSYS},
};

/* "TERM", "SIGTERM", "term" or "15". */
static int parse_signal(const char *s) {
  if (s[0] >= '0' && s[0] <= '9') return (int)parse_long(s, 1, NSIG - 1);
  const char *name = strncasecmp(s, "SIG", 3) == 0 ? s + 3 : s;
  for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; ++i)
    if (strcasecmp(name, SIGNALS[i].name) == 0) return SIGNALS[i].number;
  fail(EXIT_BAD_STEP, "bad signal '%s'", s);
}

/* A number, or the name of an environment variable holding one. */
static int parse_port(const char *s) {
  const char *value = s;
  if (!(s[0] >= '0' && s[0] <= '9')) {
    value = getenv(s);
    if (value == NULL || value[0] == '\0')
      fail(EXIT_LISTEN, "listen: environment variable %s is not set", s);
  }
  char *end;
  errno = 0;
  long v = strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < 0 || v > 65535)
    fail(EXIT_LISTEN, "listen: '%s' is not a port", value);
  return (int)v;
}

/* ---- time ------------------------------------------------------------------------------- */

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_seconds(double seconds) {
  struct timespec req, rem;
  req.tv_sec = (time_t)seconds;
  req.tv_nsec = (long)((seconds - (double)req.tv_sec) * 1e9);
  if (req.tv_nsec >= 1000000000L) req.tv_nsec = 999999999L;
  while (nanosleep(&req, &rem) != 0 && errno == EINTR) req = rem;
}

/* ---- signals ---------------------------------------------------------------------------- */

/* trap: text (newline included) to print when the signal arrives. */
static char *trap_text[NSIG];
static size_t trap_len[NSIG];

static void on_trap(int sig) {
  ssize_t r = write(STDOUT_FILENO, trap_text[sig], trap_len[sig]);
  (void)r;
  _exit(0);
}

/* Forked helpers (grandchild, escape) must not print the parent's trap text. */
static void reset_traps(void) {
  for (int sig = 1; sig < NSIG; ++sig)
    if (trap_text[sig] != NULL) signal(sig, SIG_DFL);
}

/* ---- sockets ---------------------------------------------------------------------------- */

/* Binds and listens on 127.0.0.1:port (0: the kernel picks); returns the fd and the port. */
static int open_listener(const char *spec, int *port_out) {
  int port = parse_port(spec);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(EXIT_LISTEN, "listen: socket: %s", strerror(errno));
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    fail(EXIT_LISTEN, "listen: SO_REUSEADDR: %s", strerror(errno));
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
    fail(EXIT_LISTEN, "listen: bind 127.0.0.1:%d: %s", port, strerror(errno));
  if (listen(fd, 128) != 0) fail(EXIT_LISTEN, "listen: %s", strerror(errno));
  socklen_t len = sizeof addr;
  if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
    fail(EXIT_LISTEN, "listen: getsockname: %s", strerror(errno));
  *port_out = ntohs(addr.sin_port);
  return fd;
}

static const char *reason_phrase(int code) {
  switch (code) {
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

/* Answers every request with `code` and body "ok", one connection at a time, forever. */
static _Noreturn void serve_http(const char *spec, int code) {
  int port;
  int lfd = open_listener(spec, &port);
  say(STDOUT_FILENO, "serving %d", port);
  char reply[256];
  int reply_len = snprintf(reply, sizeof reply,
                           "HTTP/1.0 %d %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                           code, reason_phrase(code));
  for (;;) {
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      fail(EXIT_LISTEN, "http: accept: %s", strerror(errno));
    }
    /* A client that connects and says nothing must not wedge the server. */
    struct timeval tv = {.tv_sec = 2};
    (void)setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[4096];
    size_t got = 0;
    while (got < sizeof req - 1) {
      ssize_t n = recv(cfd, req + got, sizeof req - 1 - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
      req[got] = '\0';
      if (strstr(req, "\r\n\r\n") != NULL) break;
    }
    if (got > 0) {
      const char *p = reply;
      size_t left = (size_t)reply_len;
      while (left > 0) {
        ssize_t n = send(cfd, p, left, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        p += n;
        left -= (size_t)n;
      }
    }
    close(cfd);
  }
}

/* ---- steps ------------------------------------------------------------------------------ */

static void step_print(char **a) { put_line(STDOUT_FILENO, a[0]); }

static void step_stderr(char **a) { put_line(STDERR_FILENO, a[0]); }

static void step_lines(char **a) {
  long n = parse_long(a[0], 0, 1000000000L);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) fail(EXIT_FAILED, "lines: out of memory");
  size_t need = strlen(a[1]) + 32;
  for (long i = 0; i < n; ++i) {
    if (cap - len < need) {
      if (len > 0) (void)write_all(STDOUT_FILENO, buf, len);
      len = 0;
      if (cap < need) {
        free(buf);
        cap = need;
        buf = malloc(cap);
        if (buf == NULL) fail(EXIT_FAILED, "lines: out of memory");
      }
    }
    len += (size_t)snprintf(buf + len, cap - len, "%s %ld\n", a[1], i);
  }
  (void)write_all(STDOUT_FILENO, buf, len);
  free(buf);
}

/* BYTES bytes of 100-byte lines (99 'x' and '\n'); a remainder becomes one shorter line. */
static void step_flood(char **a) {
  enum { LINE = 100, PER_CHUNK = 655 };
  long long total = (long long)parse_long(a[0], 0, 1L << 62);
  static char chunk[LINE * PER_CHUNK];
  memset(chunk, 'x', sizeof chunk);
  for (size_t i = LINE - 1; i < sizeof chunk; i += LINE) chunk[i] = '\n';
  long long whole = total - total % LINE;
  while (whole > 0) {
    size_t n = whole < (long long)sizeof chunk ? (size_t)whole : sizeof chunk;
    if (write_all(STDOUT_FILENO, chunk, n) != 0) return;
    whole -= (long long)n;
  }
  size_t rest = (size_t)(total % LINE);
  if (rest > 0) {
    chunk[rest - 1] = '\n';
    (void)write_all(STDOUT_FILENO, chunk, rest);
  }
}

static void step_sleep(char **a) { sleep_seconds(parse_seconds(a[0])); }

static void step_pause(char **a) {
  (void)a;
  for (;;) pause();
}

static void step_exit(char **a) { _exit((int)parse_long(a[0], 0, 255)); }

static void step_crash(char **a) {
  (void)a;
  struct rlimit none = {0, 0};
  (void)setrlimit(RLIMIT_CORE, &none); /* no core files left in the tests' directories */
  signal(SIGABRT, SIG_DFL);
  abort();
}

static void step_ignore(char **a) {
  int sig = parse_signal(a[0]);
  struct sigaction sa = {.sa_handler = SIG_IGN};
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0) fail(EXIT_FAILED, "ignore %s: %s", a[0], strerror(errno));
}

static void step_trap(char **a) {
  int sig = parse_signal(a[0]);
  size_t len = strlen(a[1]);
  char *text = malloc(len + 1);
  if (text == NULL) fail(EXIT_FAILED, "trap: out of memory");
  memcpy(text, a[1], len);
  text[len] = '\n';
  free(trap_text[sig]);
  trap_text[sig] = text;
  trap_len[sig] = len + 1;
  struct sigaction sa = {.sa_handler = on_trap};
  sigfillset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0) fail(EXIT_FAILED, "trap %s: %s", a[0], strerror(errno));
}

static void step_listen(char **a) {
  int port;
  (void)open_listener(a[0], &port); /* stays open until we exit */
  say(STDOUT_FILENO, "listening %d", port);
}

static void step_http(char **a) { serve_http(a[0], 200); }

static void step_http_status(char **a) { serve_http(a[0], (int)parse_long(a[1], 100, 999)); }

static void step_grandchild(char **a) {
  double seconds = parse_seconds(a[0]);
  pid_t pid = fork();
  if (pid < 0) fail(EXIT_FAILED, "grandchild: fork: %s", strerror(errno));
  if (pid == 0) {
    reset_traps();
    sleep_seconds(seconds);
    _exit(0);
  }
  say(STDOUT_FILENO, "grandchild %d", (int)pid);
}

static void step_escape(char **a) {
  double seconds = parse_seconds(a[0]);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) fail(EXIT_FAILED, "escape: pipe: %s", strerror(errno));
  pid_t mid = fork();
  if (mid < 0) fail(EXIT_FAILED, "escape: fork: %s", strerror(errno));
  if (mid == 0) {
    close(p[0]);
    pid_t pid = fork();
    if (pid == 0) {
      reset_traps();
      (void)setsid();
      pid_t self = getpid();
      (void)write_all(p[1], (const char *)&self, sizeof self); /* after setsid: no race */
      close(p[1]);
      sleep_seconds(seconds);
      _exit(0);
    }
    _exit(pid < 0 ? 1 : 0);
  }
  close(p[1]);
  pid_t escaped = 0;
  size_t got = 0;
  while (got < sizeof escaped) {
    ssize_t n = read(p[0], (char *)&escaped + got, sizeof escaped - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(p[0]);
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof escaped) fail(EXIT_FAILED, "escape: the grandchild did not start");
  say(STDOUT_FILENO, "escaped %d", (int)escaped);
}

/* hop LOCKFILE SECONDS: a child leaves the group and session (setsid), takes an exclusive
 * flock on LOCKFILE and becomes a subreaper; its child says "hopping PID" and then, for
 * SECONDS, forks and exits every ~250 us, so that the process that carries on is a new one
 * each time: a pid found by a scan of /proc is gone by the time it is signalled. The group
 * stays the first one's pid. The subreaper reaps each exited hop (a slow init would let
 * their zombies fill the pid space) and leaves when the chain is gone; the chain stops
 * hopping two seconds after it finds the subreaper gone. Every process of it shares the locked open file, so the
 * lock is free again only once the last of them is dead: what a test waits for. */
static void step_hop(char **a) {
  double seconds = parse_seconds(a[1]);
  pid_t mid = fork();
  if (mid < 0) fail(EXIT_FAILED, "hop: fork: %s", strerror(errno));
  if (mid == 0) {
    reset_traps();
    (void)setsid();
    int lock = open(a[0], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) != 0) fail(EXIT_FAILED, "hop: lock %s: %s", a[0], strerror(errno));
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) fail(EXIT_FAILED, "hop: subreaper: %s", strerror(errno));
    pid_t reaper = getpid();
    pid_t chain = fork();
    if (chain < 0) fail(EXIT_FAILED, "hop: fork: %s", strerror(errno));
    if (chain == 0) {
      say(STDOUT_FILENO, "hopping %d", (int)getpgrp());
      long long end = mono_ns() + (long long)(seconds * 1e9), orphaned = 0;
      while (mono_ns() < end) {
        /* Without the reaper our zombies go to init: two more seconds (long enough for a
         * sweep that kills pids, not the group, to lose us), then sit still. */
        if (orphaned == 0 && kill(reaper, 0) != 0) orphaned = mono_ns();
        if (orphaned != 0 && mono_ns() - orphaned > 2000000000LL) break;
        sleep_seconds(0.00025);
        pid_t next = fork();
        if (next > 0) _exit(0); /* the child carries on */
      }
      sleep_seconds((double)(end - mono_ns()) / 1e9);
      _exit(0);
    }
    while (waitpid(-1, NULL, 0) >= 0 || errno == EINTR) {
    }
    _exit(0);
  }
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
  }
}

static void step_orphans(char **a) {
  long n = parse_long(a[0], 0, 100000);
  pid_t mid = fork();
  if (mid < 0) fail(EXIT_FAILED, "orphans: fork: %s", strerror(errno));
  if (mid == 0) {
    for (long i = 0; i < n; ++i)
      if (fork() == 0) _exit(0);
    _exit(0); /* without waiting: the grandchildren are reparented */
  }
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
  }
  say(STDOUT_FILENO, "orphans %ld", n);
}

static int compare_ints(const void *x, const void *y) {
  int a = *(const int *)x, b = *(const int *)y;
  return (a > b) - (a < b);
}

static void step_fds(char **a) {
  (void)a;
  DIR *dir = opendir("/proc/self/fd");
  if (dir == NULL) fail(EXIT_FAILED, "fds: /proc/self/fd: %s", strerror(errno));
  int skip = dirfd(dir);
  size_t count = 0, cap = 64;
  int *fds = malloc(cap * sizeof *fds);
  if (fds == NULL) fail(EXIT_FAILED, "fds: out of memory");
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int fd = atoi(e->d_name);
    if (fd == skip) continue;
    if (count == cap) {
      cap *= 2;
      int *more = realloc(fds, cap * sizeof *fds);
      if (more == NULL) fail(EXIT_FAILED, "fds: out of memory");
      fds = more;
    }
    fds[count++] = fd;
  }
  closedir(dir);
  qsort(fds, count, sizeof *fds, compare_ints);
  char *line = malloc(4 + count * 12 + 1);
  if (line == NULL) fail(EXIT_FAILED, "fds: out of memory");
  size_t len = (size_t)sprintf(line, "fds");
  for (size_t i = 0; i < count; ++i) len += (size_t)sprintf(line + len, " %d", fds[i]);
  put_line(STDOUT_FILENO, line);
  free(line);
  free(fds);
}

static void step_env(char **a) {
  const char *value = getenv(a[0]);
  if (value == NULL)
    say(STDOUT_FILENO, "env %s unset", a[0]);
  else
    say(STDOUT_FILENO, "env %s=%s", a[0], value);
}

static void step_cwd(char **a) {
  (void)a;
  char buf[4096];
  if (getcwd(buf, sizeof buf) == NULL) fail(EXIT_FAILED, "cwd: %s", strerror(errno));
  say(STDOUT_FILENO, "cwd %s", buf);
}

static void step_pid(char **a) {
  (void)a;
  say(STDOUT_FILENO, "pid %d ppid %d pgid %d sid %d", (int)getpid(), (int)getppid(),
      (int)getpgrp(), (int)getsid(0));
}

static void step_nofile(char **a) {
  (void)a;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) fail(EXIT_FAILED, "nofile: %s", strerror(errno));
  say(STDOUT_FILENO, "nofile %llu %llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
}

static void append_or_write(const char *path, int flags, const char *text, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0644);
  if (fd < 0) fail(EXIT_FAILED, "%s: %s", path, strerror(errno));
  if (write_all(fd, text, len) != 0) fail(EXIT_FAILED, "%s: %s", path, strerror(errno));
  close(fd);
}

static void step_write_file(char **a) { append_or_write(a[0], O_TRUNC, a[1], strlen(a[1])); }

static void step_touch_and_wait(char **a) {
  while (access(a[0], F_OK) != 0) sleep_seconds(0.01);
}

/* sd_notify: one datagram to $NOTIFY_SOCKET; a leading '@' names an abstract socket. */
static void step_notify(char **a) {
  const char *name = getenv("NOTIFY_SOCKET");
  if (name == NULL || name[0] == '\0') fail(EXIT_NOTIFY, "notify: NOTIFY_SOCKET is not set");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t len = strlen(name);
  if (len >= sizeof addr.sun_path) fail(EXIT_NOTIFY, "notify: socket name too long: %s", name);
  memcpy(addr.sun_path, name, len);
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  if (name[0] == '@')
    addr.sun_path[0] = '\0';
  else
    addr_len += 1; /* the terminating NUL of a path */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(EXIT_NOTIFY, "notify: socket: %s", strerror(errno));
  ssize_t n;
  do {
    n = sendto(fd, a[0], strlen(a[0]), MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) fail(EXIT_NOTIFY, "notify: send to %s: %s", name, strerror(errno));
  close(fd);
  put_line(STDOUT_FILENO, "notified");
}

static void step_count_file(char **a) { append_or_write(a[0], O_APPEND, "x\n", 2); }

static void step_exit_on_count(char **a) {
  long want = parse_long(a[1], 0, 1000000000L);
  int code = (int)parse_long(a[2], 0, 255);
  long lines = 0;
  int fd = open(a[0], O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
    close(fd);
  }
  if (lines < want) _exit(code);
}

static void step_monotime(char **a) {
  (void)a;
  say(STDOUT_FILENO, "monotime %lld", mono_ns());
}

static void step_exit_stamp(char **a) {
  int code = (int)parse_long(a[1], 0, 255);
  char line[32];
  int len = snprintf(line, sizeof line, "%lld\n", mono_ns());
  append_or_write(a[0], O_APPEND, line, (size_t)len);
  _exit(code);
}

static void step_busy(char **a) {
  long long end = mono_ns() + (long long)(parse_seconds(a[0]) * 1e9);
  volatile unsigned long spin = 0;
  while (mono_ns() < end)
    for (int i = 0; i < 10000; ++i) spin = spin + 1;
}

/* Allocates N MiB and touches every page, so it is resident (metrics tests). */
static void step_alloc(char **a) {
  size_t bytes = (size_t)(parse_seconds(a[0]) * 1024 * 1024);
  char *p = malloc(bytes);
  if (!p) fail(EXIT_FAILED, "alloc: out of memory");
  for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
  say(STDOUT_FILENO, "allocated %zu", bytes);
}

/* A child that allocates N MiB, touches it, then sleeps until killed with the group; the
 * parent says "child-alloc PID" once the memory is resident. */
static void step_child_alloc(char **a) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) fail(EXIT_FAILED, "child-alloc: pipe: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) fail(EXIT_FAILED, "child-alloc: fork: %s", strerror(errno));
  if (pid == 0) {
    reset_traps();
    close(p[0]);
    size_t bytes = (size_t)(parse_seconds(a[0]) * 1024 * 1024);
    char *m = malloc(bytes);
    if (!m) _exit(EXIT_FAILED);
    for (size_t i = 0; i < bytes; i += 4096) m[i] = 1;
    (void)write_all(p[1], "x", 1);
    for (;;) pause();
  }
  close(p[1]);
  char c;
  while (read(p[0], &c, 1) < 0 && errno == EINTR) {
  }
  close(p[0]);
  say(STDOUT_FILENO, "child-alloc %d", (int)pid);
}

/* ---- main ------------------------------------------------------------------------------- */

static const struct {
  const char *name;
  int nargs;
  void (*run)(char **args);
} STEPS[] = {
    {"print", 1, step_print},
    {"stderr", 1, step_stderr},
    {"lines", 2, step_lines},
    {"flood", 1, step_flood},
    {"sleep", 1, step_sleep},
    {"pause", 0, step_pause},
    {"exit", 1, step_exit},
    {"crash", 0, step_crash},
    {"ignore", 1, step_ignore},
    {"trap", 2, step_trap},
    {"listen", 1, step_listen},
    {"http", 1, step_http},
    {"http-status", 2, step_http_status},
    {"grandchild", 1, step_grandchild},
    {"escape", 1, step_escape},
    {"orphans", 1, step_orphans},
    {"hop", 2, step_hop},
    {"fds", 0, step_fds},
    {"env", 1, step_env},
    {"cwd", 0, step_cwd},
    {"pid", 0, step_pid},
    {"nofile", 0, step_nofile},
    {"write-file", 2, step_write_file},
    {"touch-and-wait", 1, step_touch_and_wait},
    {"notify", 1, step_notify},
    {"count-file", 1, step_count_file},
    {"exit-on-count", 3, step_exit_on_count},
    {"monotime", 0, step_monotime},
    {"exit-stamp", 2, step_exit_stamp},
    {"busy", 1, step_busy},
    {"alloc", 1, step_alloc},
    {"child-alloc", 1, step_child_alloc},
};

/* Index into STEPS of argv[i] if it is a step with all its arguments present, else -1. */
static int find_step(int argc, char **argv, int i) {
  for (size_t s = 0; s < sizeof STEPS / sizeof STEPS[0]; ++s)
    if (strcmp(argv[i], STEPS[s].name) == 0) return i + STEPS[s].nargs < argc ? (int)s : -1;
  return -1;
}

int main(int argc, char **argv) {
  /* Check the whole script first, so a typo fails before anything has happened. */
  for (int i = 1; i < argc;) {
    int s = find_step(argc, argv, i);
    if (s < 0) fail(EXIT_BAD_STEP, "bad step '%s'", argv[i]);
    i += 1 + STEPS[s].nargs;
  }
  for (int i = 1; i < argc;) {
    int s = find_step(argc, argv, i);
    STEPS[s].run(argv + i + 1);
    i += 1 + STEPS[s].nargs;
  }
  return 0;
}
