/* The floor for serving files over HTTP/1.1 on this kernel (benches/appliance.sh builds it with
 * `cc -O2`): one thread, epoll (edge-triggered), non-blocking sockets, keep-alive. Per request:
 * read until the blank line, take the path, open it (a cache of descriptors by path), write a
 * fixed header with Content-Length, `sendfile` the file, or the one `Range: bytes=A-B` the request
 * names (206 with Content-Range; anything else in the header is ignored). No parsing beyond the
 * path and that header, no checks: it is the least work any server can do for a GET, so what a
 * real server spends above it is its own overhead.
 *
 * The grant in /g/<grant>/... is ~320 bytes, so the request buffer and path are sized for it.
 *
 *   floor_server PORT ROOT [STRIP]   # STRIP: path segments to drop first (2 for /g/<grant>/...)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#define MAXC 65536
#define NCACHE 1024

struct conn {
  char buf[8192];
  int used;
  int file;         /* descriptor being sent, -1 when none */
  off_t off, end;   /* file range left */
  char head[256];
  int hlen, hsent;
};

static struct conn *conns[MAXC];
static struct { char path[512]; int fd; off_t size; } cache[NCACHE];
static int root;

static int lookup(const char *path, off_t *size) {
  if (strlen(path) >= sizeof cache[0].path) return -1;
  unsigned h = 5381;
  for (const char *p = path; *p; p++) h = h * 33 + (unsigned char)*p;
  for (int i = 0; i < NCACHE; i++) {
    int j = (h + i) % NCACHE;
    if (cache[j].fd > 0 && strcmp(cache[j].path, path) == 0) { *size = cache[j].size; return cache[j].fd; }
    if (cache[j].fd == 0) {
      int fd = openat(root, path, O_RDONLY | O_CLOEXEC);
      struct stat st;
      if (fd < 0 || fstat(fd, &st) < 0) return -1;
      snprintf(cache[j].path, sizeof cache[j].path, "%s", path);
      cache[j].fd = fd; cache[j].size = st.st_size;
      *size = st.st_size;
      return fd;
    }
  }
  return -1;
}

static void drop(int ep, int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
  free(conns[fd]);
  conns[fd] = NULL;
}

/* Returns 0 to keep the connection, -1 to close it. */
static int serve(struct conn *c, int fd, int strip) {
  for (;;) {
    if (c->file >= 0) {
      while (c->hsent < c->hlen) {
        /* No MSG_MORE: a head corked in front of the file costs a BBR pacing timer per
         * response on this kernel (BENCHMARKS.md). */
        ssize_t n = send(fd, c->head + c->hsent, c->hlen - c->hsent, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->hsent += n;
      }
      while (c->off < c->end) {
        ssize_t n = sendfile(fd, c->file, &c->off, c->end - c->off);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        if (n == 0) return -1;
      }
      c->file = -1;
    }
    char *eoh = memmem(c->buf, c->used, "\r\n\r\n", 4);
    if (!eoh) {
      ssize_t n = recv(fd, c->buf + c->used, sizeof c->buf - c->used, 0);
      if (n <= 0) return (n < 0 && errno == EAGAIN) ? 0 : -1;
      c->used += n;
      if (c->used == sizeof c->buf) return -1;
      continue;
    }
    /* "GET /path HTTP/1.1" */
    char *p = memchr(c->buf, ' ', eoh - c->buf);
    if (!p) return -1;
    char *q = memchr(p + 1, ' ', eoh - p - 1);
    if (!q) return -1;
    char path[4096];
    int len = q - p - 2;
    if (len <= 0 || len >= (int)sizeof path) return -1;
    memcpy(path, p + 2, len);
    path[len] = 0;
    char *rel = path;
    for (int i = 0; i < strip && rel; i++) { rel = strchr(rel, '/'); if (rel) rel++; }
    off_t size;
    int f = rel ? lookup(rel, &size) : -1;
    if (f < 0) return -1;
    c->file = f; c->off = 0; c->end = size; c->hsent = 0;
    long long a, b;
    char *r = memmem(c->buf, eoh - c->buf, "\r\nRange: bytes=", 15);
    if (r && sscanf(r + 15, "%lld-%lld", &a, &b) == 2 && a <= b && b < size) {
      c->off = a; c->end = b + 1;
      c->hlen = snprintf(c->head, sizeof c->head,
                         "HTTP/1.1 206 Partial Content\r\nContent-Type: video/mp4\r\n"
                         "Content-Range: bytes %lld-%lld/%lld\r\nContent-Length: %lld\r\n\r\n",
                         a, b, (long long)size, b - a + 1);
    } else {
      c->hlen = snprintf(c->head, sizeof c->head,
                         "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %lld\r\n\r\n",
                         (long long)size);
    }
    int consumed = eoh + 4 - c->buf;
    memmove(c->buf, c->buf + consumed, c->used - consumed);
    c->used -= consumed;
  }
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s PORT ROOT [STRIP]\n", argv[0]); return 2; }
  int strip = argc > 3 ? atoi(argv[3]) : 0;
  signal(SIGPIPE, SIG_IGN); /* sendfile to a closed peer raises SIGPIPE */
  root = open(argv[2], O_RDONLY | O_DIRECTORY);
  if (root < 0) { perror("root"); return 1; }
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                           .sin_addr.s_addr = htonl(0x7f000001) };
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) { perror("listen"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = l };
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == l) {
        int s;
        while ((s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          if (s >= MAXC) { close(s); continue; }
          setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[s] = calloc(1, sizeof(struct conn));
          conns[s]->file = -1;
          struct epoll_event e = { .events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.fd = s };
          epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
        }
        continue;
      }
      if (conns[fd] && serve(conns[fd], fd, strip) < 0) drop(ep, fd);
    }
  }
}
