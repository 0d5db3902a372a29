/* Accept-all NFQUEUE consumer with C libnetfilter_queue, one verdict per packet (no batching).
 * The baseline "C per-packet" of bench/hooks. Build: gcc -O2 nfq_accept.c -lnetfilter_queue */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stop;
static unsigned long packets;

static void on_term(int sig) { (void)sig; stop = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    packets++;
    return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv)
{
    int queue = argc > 1 ? atoi(argv[1]) : 0;
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, &on_packet, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff);
    nfq_set_queue_maxlen(qh, 4096);
    int fd = nfq_fd(h);
    int size = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    char buf[65536] __attribute__((aligned));
    while (!stop) {
        int n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == ENOBUFS || errno == EINTR) continue;
            perror("recv");
            break;
        }
        nfq_handle_packet(h, buf, n);
    }
    fprintf(stderr, "c consumer: %lu packets\n", packets);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
