/*
 * floor: the physical floor for corral's benchmarks. A plain C program doing the least a
 * supervisor must do, with nothing around it: no state machine, no logs, no readiness.
 * bench/run.py compiles it with `cc -O2` into a temporary directory at run time.
 *
 *   floor startstop N SETTLE PROG [ARGS...]  posix_spawn N copies of PROG (posix_spawn
 *                                        returns once the child has exec'd), wait SETTLE
 *                                        seconds (not timed), then SIGTERM them all and reap
 *                                        them all
 *   floor restart SECONDS PROG [ARGS...] spawn PROG, wait for its exit, spawn again, for
 *                                        SECONDS: the crash-restart cycle
 *   floor exitlat K STAMPFILE HELPER     K times: spawn `HELPER exit-stamp STAMPFILE 0`, poll
 *                                        its pidfd, take CLOCK_MONOTONIC when poll returns;
 *                                        latency = that minus the child's own stamp
 *   floor chain N HELPER                 N servers `HELPER listen PORT pause` one after the
 *                                        other, each started once the previous accepts a TCP
 *                                        connection (connect retried every 50 us)
 *   floor ports K [LOCKDIR]              K free ports: socket + bind(0) + getsockname, kept
 *                                        open; with LOCKDIR also an flock'd file per port
 *   floor logs BYTES HELPER              `HELPER flood BYTES` into a pipe read in 64 KiB
 *                                        chunks, newlines counted; and the same writer into
 *                                        /dev/null (the writer alone)
 *
 * Every command prints one line of JSON on stdout; times are seconds (float).
 * C11 + POSIX, Linux only, libc only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static pid_t spawn(char **argv, posix_spawn_file_actions_t *fa) {
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], fa, NULL, argv, environ);
  if (rc != 0) {
    errno = rc;
    die("posix_spawn");
  }
  return pid;
}

static void reap(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
}

static int cmd_startstop(int n, double settle, char **argv) {
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  if (pids == NULL) die("calloc");
  double t0 = now();
  for (int i = 0; i < n; ++i) pids[i] = spawn(argv, NULL);
  double started = now() - t0;
  if (settle > 0) usleep((useconds_t)(settle * 1e6));
  double t1 = now();
  for (int i = 0; i < n; ++i) kill(pids[i], SIGTERM);
  for (int i = 0; i < n; ++i) reap(pids[i]);
  double t2 = now();
  printf("{\"n\": %d, \"start\": %.6f, \"stop\": %.6f}\n", n, started, t2 - t1);
  free(pids);
  return 0;
}

static int cmd_restart(double seconds, char **argv) {
  long cycles = 0;
  double t0 = now(), end = t0 + seconds, t;
  do {
    reap(spawn(argv, NULL));
    ++cycles;
    t = now();
  } while (t < end);
  printf("{\"cycles\": %ld, \"seconds\": %.6f, \"cycle\": %.9f}\n", cycles, t - t0, (t - t0) / (double)cycles);
  return 0;
}

static int cmd_exitlat(int k, const char *stampfile, const char *helper) {
  long long *seen = calloc((size_t)k, sizeof *seen);
  if (seen == NULL) die("calloc");
  unlink(stampfile);
  char *argv[] = {(char *)helper, "exit-stamp", (char *)stampfile, "0", NULL};
  for (int i = 0; i < k; ++i) {
    pid_t pid = spawn(argv, NULL);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) die("pidfd_open");
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    while (poll(&p, 1, -1) < 0)
      if (errno != EINTR) die("poll");
    seen[i] = now_ns();
    reap(pid);
    close(pidfd);
    usleep(2000); /* let the machine settle, as between two crashes of a real service */
  }
  FILE *f = fopen(stampfile, "r");
  if (f == NULL) die(stampfile);
  printf("{\"latency_ns\": [");
  for (int i = 0; i < k; ++i) {
    long long stamp = 0;
    if (fscanf(f, "%lld", &stamp) != 1) die("short stamp file");
    printf("%s%lld", i ? ", " : "", seen[i] - stamp);
  }
  printf("]}\n");
  fclose(f);
  free(seen);
  return 0;
}

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
  socklen_t len = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(s, (struct sockaddr *)&a, &len) != 0)
    die("free port");
  close(s);
  return ntohs(a.sin_port);
}

static int accepts(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = connect(s, (struct sockaddr *)&a, sizeof a) == 0;
  close(s);
  return ok;
}

static int cmd_chain(int n, const char *helper) {
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  if (pids == NULL) die("calloc");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  double t0 = now();
  printf("{\"links\": [");
  for (int i = 0; i < n; ++i) {
    double l0 = now();
    char port[16];
    snprintf(port, sizeof port, "%d", free_port());
    char *argv[] = {(char *)helper, "listen", port, "pause", NULL};
    pids[i] = spawn(argv, &fa);
    while (!accepts(atoi(port))) usleep(50);
    printf("%s%.6f", i ? ", " : "", now() - l0);
  }
  double t1 = now();
  printf("], \"total\": %.6f}\n", t1 - t0);
  for (int i = 0; i < n; ++i) kill(pids[i], SIGKILL);
  for (int i = 0; i < n; ++i) reap(pids[i]);
  free(pids);
  return 0;
}

static int cmd_ports(int k, const char *lockdir) {
  int *socks = calloc((size_t)k, sizeof *socks), *locks = calloc((size_t)k, sizeof *locks);
  int *ports = calloc((size_t)k, sizeof *ports);
  if (socks == NULL || locks == NULL || ports == NULL) die("calloc");
  double t0 = now();
  for (int i = 0; i < k; ++i) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof a;
    socks[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (socks[i] < 0 || bind(socks[i], (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(socks[i], (struct sockaddr *)&a, &len) != 0)
      die("bind");
    ports[i] = ntohs(a.sin_port);
    locks[i] = -1;
    if (lockdir != NULL) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%d", lockdir, ports[i]);
      locks[i] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (locks[i] < 0 || flock(locks[i], LOCK_EX | LOCK_NB) != 0) die("flock");
    }
  }
  double t1 = now();
  int distinct = 1;
  for (int i = 0; i < k && distinct; ++i)
    for (int j = i + 1; j < k; ++j)
      if (ports[i] == ports[j]) distinct = 0;
  for (int i = 0; i < k; ++i) {
    close(socks[i]);
    if (locks[i] >= 0) close(locks[i]);
  }
  printf("{\"claims\": %d, \"seconds\": %.6f, \"distinct\": %s}\n", k, t1 - t0, distinct ? "true" : "false");
  return 0;
}

static int cmd_logs(const char *bytes, const char *helper) {
  char *argv[] = {(char *)helper, "flood", (char *)bytes, NULL};
  /* The writer alone, into /dev/null: it never blocks. */
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  double w0 = now();
  reap(spawn(argv, &fa));
  double alone = now() - w0;
  posix_spawn_file_actions_destroy(&fa);
  /* The writer into a pipe that we drain as fast as we can. */
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  static char buf[65536];
  long long lines = 0;
  double t0 = now();
  pid_t pid = spawn(argv, &fa);
  close(p[1]);
  for (;;) {
    ssize_t n = read(p[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("read");
    if (n == 0) break;
    for (char *c = buf; (c = memchr(c, '\n', (size_t)(buf + n - c))) != NULL; ++c) ++lines;
  }
  reap(pid);
  double t1 = now();
  printf("{\"lines\": %lld, \"seconds\": %.6f, \"lines_per_s\": %.1f, \"writer_alone\": %.6f}\n", lines, t1 - t0,
         (double)lines / (t1 - t0), alone);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 5 && strcmp(argv[1], "startstop") == 0) return cmd_startstop(atoi(argv[2]), atof(argv[3]), argv + 4);
  if (argc >= 4 && strcmp(argv[1], "restart") == 0) return cmd_restart(atof(argv[2]), argv + 3);
  if (argc == 5 && strcmp(argv[1], "exitlat") == 0) return cmd_exitlat(atoi(argv[2]), argv[3], argv[4]);
  if (argc == 4 && strcmp(argv[1], "chain") == 0) return cmd_chain(atoi(argv[2]), argv[3]);
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "ports") == 0) return cmd_ports(atoi(argv[2]), argc == 4 ? argv[3] : NULL);
  if (argc == 4 && strcmp(argv[1], "logs") == 0) return cmd_logs(argv[2], argv[3]);
  fprintf(stderr, "usage: see the header of bench/floor.c\n");
  return 2;
}
