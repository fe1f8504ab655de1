/* Unit tests for queue.c, including a model check of mixed operations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "queue.h"

static void test_basic(void) {
    rf_queue q;
    rf_queue_init(&q);
    int64_t x;
    CHECK(rf_queue_pop(&q, &x) == RF_ENOTFOUND);
    CHECK(rf_queue_peek(&q, &x) == RF_ENOTFOUND);
    for (int64_t i = 0; i < 100; i++) CHECK(rf_queue_push(&q, i) == RF_OK);
    CHECK(rf_queue_push_front(&q, -5) == RF_OK);
    CHECK(rf_queue_len(&q) == 101);
    CHECK(rf_queue_peek(&q, &x) == RF_OK && x == -5);
    CHECK(rf_queue_pop(&q, &x) == RF_OK && x == -5);
    CHECK(rf_queue_remove(&q, 50) == RF_OK);
    CHECK(rf_queue_remove(&q, 50) == RF_ENOTFOUND);
    for (int64_t i = 0; i < 100; i++) {
        if (i == 50) continue;
        CHECK(rf_queue_pop(&q, &x) == RF_OK && x == i);
    }
    CHECK(rf_queue_len(&q) == 0);
    rf_queue_stats st;
    rf_queue_get_stats(&q, &st);
    CHECK(st.pushed == 101 && st.popped == 100 && st.removed == 1 && st.max_length == 101);
    CHECK(st.length == 0);
    rf_queue_push(&q, 1);
    rf_queue_push(&q, 2);
    rf_queue_clear(&q);
    CHECK(rf_queue_len(&q) == 0 && rf_queue_pop(&q, &x) == RF_ENOTFOUND);
    rf_queue_destroy(&q);
    rf_queue_destroy(&q); /* idempotent */
}

/* Model: a plain array deque with front at model[lo]. */
static void test_model(void) {
    enum { M = 1 << 16 };
    static int64_t model[M];
    size_t lo = M / 2, hi = M / 2;
    rf_queue q;
    rf_queue_init(&q);
    uint64_t r = 7;
    int64_t next = 0, x;
    for (int step = 0; step < 100000; step++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        int op = (int)((r >> 33) % 10);
        if (op < 4 && hi < M) {
            CHECK(rf_queue_push(&q, next) == RF_OK);
            model[hi++] = next++;
        } else if (op < 5 && lo > 0) {
            CHECK(rf_queue_push_front(&q, next) == RF_OK);
            model[--lo] = next++;
        } else if (op < 9) {
            int rc = rf_queue_pop(&q, &x);
            if (lo == hi) CHECK(rc == RF_ENOTFOUND);
            else {
                CHECK(rc == RF_OK && x == model[lo]);
                lo++;
            }
        } else if (lo < hi) {
            size_t i = lo + (size_t)(r % (hi - lo));
            CHECK(rf_queue_remove(&q, model[i]) == RF_OK);
            memmove(&model[i], &model[i + 1], (hi - i - 1) * sizeof(int64_t));
            hi--;
        }
        CHECK(rf_queue_len(&q) == hi - lo);
    }
    while (lo < hi) CHECK(rf_queue_pop(&q, &x) == RF_OK && x == model[lo++]);
    rf_queue_stats st;
    rf_queue_get_stats(&q, &st);
    CHECK(st.pushed == st.popped + st.removed);
    rf_queue_destroy(&q);
}

int main(void) {
    test_basic();
    test_model();
    return check_done("test_queue");
}
