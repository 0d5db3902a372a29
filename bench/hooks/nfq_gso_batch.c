/* Accept-all NFQUEUE consumer with C libnetfilter_queue and the queue settings minifw uses for
 * TCP: F_GSO, a 128-byte copy, and one batch verdict per burst (one blocking recv, then up to 63
 * more without waiting). The "C with minifw's settings" reference of bench/hooks' TCP cases.
 * Build: gcc -O2 nfq_gso_batch.c -lnetfilter_queue */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stop;
static unsigned long packets;
static uint32_t last_id;
static int pending;

static void on_term(int sig) { (void)sig; stop = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *data)
{
    (void)qh; (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    packets++;
    last_id = ntohl(ph->packet_id);
    pending = 1;
    return 0;
}

int main(int argc, char **argv)
{
    int queue = argc > 1 ? atoi(argv[1]) : 0;
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, &on_packet, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    nfq_set_mode(qh, NFQNL_COPY_PACKET, 128);
    nfq_set_queue_maxlen(qh, 4096);
    if (nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO) < 0) {
        perror("nfq_set_queue_flags");
        return 1;
    }
    int fd = nfq_fd(h);
    int size = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    char buf[4096] __attribute__((aligned));
    while (!stop) {
        int n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == ENOBUFS || errno == EINTR) continue;
            perror("recv");
            break;
        }
        nfq_handle_packet(h, buf, n);
        for (int i = 0; i < 63; i++) {
            n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) break;
            nfq_handle_packet(h, buf, n);
        }
        if (pending) {  /* accepts every queued packet up to last_id */
            nfq_set_verdict_batch(qh, last_id, NF_ACCEPT);
            pending = 0;
        }
    }
    fprintf(stderr, "c gso batch consumer: %lu packets\n", packets);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
