/* spin.h -- wait for a socket to become readable by polling it briefly
 * before the caller goes to sleep in recv().
 *
 * On small VMs a blocked reader takes 15-20 us to be woken when bytes
 * arrive: for a call answered in 20 us that wakeup, paid on both sides, is
 * most of the round trip. A reader that expects an answer soon polls the
 * socket for up to max_ns first. A spinner adapts so that a slow peer does
 * not make it burn CPU: after RF_SPIN_PATIENCE waits in a row that ran out
 * their budget it skips spinning for 1, 2, 4 ... 16 following waits (a
 * re-probe each time the skip ends), and one answered spin resets that. A
 * miss now and then (the peer was descheduled) costs one budget and no skip. */
#ifndef RF_SPIN_H
#define RF_SPIN_H

#include <stdint.h>

#include "rf_errors.h"

#define RF_SPIN_MAX_BACKOFF 16    /* waits skipped at most: with a slow peer one wait in 17 spins in vain */
#define RF_SPIN_PATIENCE 3        /* misses in a row before spinning backs off */

typedef struct rf_spin_stats {
    uint64_t hits;     /* waits that saw the socket readable while spinning */
    uint64_t misses;   /* waits whose budget ran out */
    uint64_t skipped;  /* waits that did not spin (backing off after misses) */
    uint64_t spun_ns;  /* time spent polling, all waits */
} rf_spin_stats;

typedef struct rf_spin {
    int64_t max_ns;     /* budget of one wait; 0 never spins */
    uint32_t backoff;   /* waits to skip at the next skip (doubles each time, to RF_SPIN_MAX_BACKOFF) */
    uint32_t skip;      /* waits left to skip */
    uint32_t missed;    /* misses in a row */
    rf_spin_stats stats;
} rf_spin;

void rf_spin_init(rf_spin *s, int64_t max_ns);

/* Poll fd until it is readable (or hung up) or the budget runs out.
 * Returns 1 if readable, 0 if not (the caller blocks as usual),
 * RF_EINVAL for a descriptor poll() rejects. */
int rf_spin_wait(rf_spin *s, int fd);

void rf_spin_get_stats(const rf_spin *s, rf_spin_stats *out);

#endif
