/* queue.h -- FIFO of int64 task handles on a growable ring buffer.
 *
 * push/pop/push_front are O(1) amortised; remove(handle) is O(n) and exists
 * for cancellation, which is rare. */
#ifndef RF_QUEUE_H
#define RF_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "rf_errors.h"

typedef struct rf_queue_stats {
    size_t length;
    uint64_t pushed;  /* push + push_front */
    uint64_t popped;
    uint64_t removed; /* remove() hits; clear() counts too */
    size_t max_length;
} rf_queue_stats;

typedef struct rf_queue {
    int64_t *buf;
    size_t cap;  /* power of two (or 0 before first push) */
    size_t head; /* index of the front element */
    size_t len;
    rf_queue_stats stats;
} rf_queue;

void rf_queue_init(rf_queue *q);
void rf_queue_destroy(rf_queue *q);

int rf_queue_push(rf_queue *q, int64_t handle);
int rf_queue_push_front(rf_queue *q, int64_t handle);
/* RF_ENOTFOUND when empty. */
int rf_queue_pop(rf_queue *q, int64_t *out);
int rf_queue_peek(const rf_queue *q, int64_t *out);
/* Remove the first occurrence; RF_ENOTFOUND if absent. Order is kept. */
int rf_queue_remove(rf_queue *q, int64_t handle);
void rf_queue_clear(rf_queue *q);

static inline size_t rf_queue_len(const rf_queue *q) { return q->len; }
void rf_queue_get_stats(const rf_queue *q, rf_queue_stats *out);

#endif
