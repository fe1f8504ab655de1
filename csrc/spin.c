/* spin.c -- see spin.h. */
#include "spin.h"

#include <poll.h>
#include <string.h>
#include <time.h>


static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void rf_spin_init(rf_spin *s, int64_t max_ns) {
    memset(s, 0, sizeof(*s));
    s->max_ns = max_ns > 0 ? max_ns : 0;
    s->backoff = 1;
}

int rf_spin_wait(rf_spin *s, int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (s->max_ns == 0 || s->skip > 0) {
        if (s->skip > 0) s->skip--;
        s->stats.skipped++;
        return 0;
    }
    int64_t start = now_ns(), t = start;
    do {
        int r = poll(&p, 1, 0);
        if (r > 0) {
            s->stats.spun_ns += (uint64_t)(now_ns() - start);
            if (p.revents & POLLNVAL) return RF_EINVAL;
            s->stats.hits++;
            s->backoff = 1;
            s->missed = 0;
            return 1;
        }
        t = now_ns();
    } while (t - start < s->max_ns);
    s->stats.spun_ns += (uint64_t)(t - start);
    s->stats.misses++;
    if (++s->missed >= RF_SPIN_PATIENCE) {
        s->skip = s->backoff;
        if (s->backoff < RF_SPIN_MAX_BACKOFF) s->backoff *= 2;
    }
    return 0;
}

void rf_spin_get_stats(const rf_spin *s, rf_spin_stats *out) { *out = s->stats; }
