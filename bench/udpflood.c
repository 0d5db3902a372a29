/* A bounded UDP flood for bench/scale. Sends small datagrams for SECONDS, with sendmmsg batches,
 * to ADDR PORT, or, given a second address, to both in turn: one batch to A, one to B, ...
 *
 * On veth the receiver's whole input path (its netfilter hooks included) runs inside the
 * sender's sendmmsg call, in softirq. So the time spent in the calls to each address is what
 * that path costs, measured batch by batch under the same load: what drifts on a shared
 * machine (other jobs, frequency, the hypervisor) hits both sides alike.
 *
 * Prints, per address: datagrams sent, then seconds spent in the calls to it.
 * IPv4 or IPv6. Never runs longer than 60 s. */
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

static int open_to(const char *addr, int port) {
    struct sockaddr_storage ss; socklen_t len; memset(&ss, 0, sizeof ss);
    int family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6; a->sin6_port = htons(port);
        if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1) return -1;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET; a->sin_port = htons(port);
        if (inet_pton(AF_INET, addr, &a->sin_addr) != 1) return -1;
        len = sizeof *a;
    }
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0) return -1;
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: udpflood ADDR [ADDR_B] PORT SECONDS\n");
        return 2;
    }
    int n = argc - 3;  /* 1 or 2 addresses */
    int port = atoi(argv[argc - 2]);
    double seconds = atof(argv[argc - 1]);
    if (seconds <= 0 || seconds > 60) { fprintf(stderr, "SECONDS must be in (0, 60]\n"); return 2; }
    int fds[2];
    for (int i = 0; i < n; i++) {
        fds[i] = open_to(argv[1 + i], port);
        if (fds[i] < 0) { perror(argv[1 + i]); return 1; }
    }
    char payload[32] = "minifw-bench";
    struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload; iov[i].iov_len = sizeof payload;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long sent[2] = {0, 0};
    double spent[2] = {0, 0};
    double t = now(), end = t + seconds;
    for (unsigned long turn = 0; t < end; turn++) {
        int i = turn % n;
        int k = sendmmsg(fds[i], msgs, BATCH, 0);
        double after = now();
        if (k > 0) sent[i] += k;
        spent[i] += after - t;
        t = after;
    }
    for (int i = 0; i < n; i++)
        printf("%lu %.6f%c", sent[i], spent[i], i == n - 1 ? '\n' : ' ');
    return 0;
}
