/* queue.c -- see queue.h. */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

#define MIN_CAP 16

void rf_queue_init(rf_queue *q) { memset(q, 0, sizeof(*q)); }

void rf_queue_destroy(rf_queue *q) {
    free(q->buf);
    q->buf = NULL;
    q->cap = q->len = q->head = 0;
}

static inline size_t slot(const rf_queue *q, size_t i) { return (q->head + i) & (q->cap - 1); }

/* Double the buffer, unwrapping the ring so the front lands at index 0. */
static int grow(rf_queue *q) {
    size_t ncap = q->cap ? q->cap * 2 : MIN_CAP;
    if (ncap < q->cap || ncap > SIZE_MAX / sizeof(int64_t)) return RF_ENOMEM;
    int64_t *nb = malloc(ncap * sizeof(int64_t));
    if (!nb) return RF_ENOMEM;
    if (q->len) {
        size_t first = q->cap - q->head;
        if (first > q->len) first = q->len;
        memcpy(nb, q->buf + q->head, first * sizeof(int64_t));
        memcpy(nb + first, q->buf, (q->len - first) * sizeof(int64_t));
    }
    free(q->buf);
    q->buf = nb;
    q->cap = ncap;
    q->head = 0;
    return RF_OK;
}

static inline void note_push(rf_queue *q) {
    q->len++;
    q->stats.pushed++;
    if (q->len > q->stats.max_length) q->stats.max_length = q->len;
}

int rf_queue_push(rf_queue *q, int64_t handle) {
    if (q->len == q->cap && grow(q) != RF_OK) return RF_ENOMEM;
    q->buf[slot(q, q->len)] = handle;
    note_push(q);
    return RF_OK;
}

int rf_queue_push_front(rf_queue *q, int64_t handle) {
    if (q->len == q->cap && grow(q) != RF_OK) return RF_ENOMEM;
    q->head = (q->head + q->cap - 1) & (q->cap - 1);
    q->buf[q->head] = handle;
    note_push(q);
    return RF_OK;
}

int rf_queue_pop(rf_queue *q, int64_t *out) {
    if (!q->len) return RF_ENOTFOUND;
    *out = q->buf[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    q->stats.popped++;
    return RF_OK;
}

int rf_queue_peek(const rf_queue *q, int64_t *out) {
    if (!q->len) return RF_ENOTFOUND;
    *out = q->buf[q->head];
    return RF_OK;
}

int rf_queue_remove(rf_queue *q, int64_t handle) {
    for (size_t i = 0; i < q->len; i++) {
        if (q->buf[slot(q, i)] != handle) continue;
        /* Close the gap by shifting the later elements forward one slot. */
        for (size_t j = i; j + 1 < q->len; j++) q->buf[slot(q, j)] = q->buf[slot(q, j + 1)];
        q->len--;
        q->stats.removed++;
        return RF_OK;
    }
    return RF_ENOTFOUND;
}

void rf_queue_clear(rf_queue *q) {
    q->stats.removed += q->len;
    q->len = 0;
    q->head = 0;
}

void rf_queue_get_stats(const rf_queue *q, rf_queue_stats *out) {
    *out = q->stats;
    out->length = q->len;
}
