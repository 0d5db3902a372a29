/* A bounded UDP flood for bench/scale: send small datagrams to ADDR PORT for SECONDS, with
 * sendmmsg batches; print how many were sent. IPv4 or IPv6. Never runs longer than 60 s. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: udpflood ADDR PORT SECONDS\n"); return 2; }
    double seconds = atof(argv[3]);
    if (seconds <= 0 || seconds > 60) { fprintf(stderr, "SECONDS must be in (0, 60]\n"); return 2; }
    struct sockaddr_storage ss; socklen_t len; memset(&ss, 0, sizeof ss);
    int family = strchr(argv[1], ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6; a->sin6_port = htons(atoi(argv[2]));
        if (inet_pton(AF_INET6, argv[1], &a->sin6_addr) != 1) return 2;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET; a->sin_port = htons(atoi(argv[2]));
        if (inet_pton(AF_INET, argv[1], &a->sin_addr) != 1) return 2;
        len = sizeof *a;
    }
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0) { perror("socket"); return 1; }
    char payload[32] = "minifw-bench";
    struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload; iov[i].iov_len = sizeof payload;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long sent = 0;
    double end = now() + seconds;
    while (now() < end) {
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n > 0) sent += n;
    }
    printf("%lu\n", sent);
    return 0;
}
