/* Unit tests for deps.c: the documented cases, then a random model check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "deps.h"

static void oid(uint8_t out[20], uint32_t i) {
    memset(out, 0x11, 20);
    memcpy(out + 16, &i, 4);
}

static void test_basic(void) {
    rf_deps *d = rf_deps_new();
    uint8_t ids[3 * 20];
    oid(ids, 1);
    oid(ids + 20, 2);
    oid(ids + 40, 1); /* duplicate counts once */
    size_t missing, n;
    const int64_t *rel;
    CHECK(rf_deps_add_task(d, 10, ids, 3, &missing) == RF_OK && missing == 2);
    CHECK(rf_deps_add_task(d, 10, ids, 1, &missing) == RF_EEXIST);
    CHECK(rf_deps_add_task(d, 11, ids + 20, 1, &missing) == RF_OK && missing == 1);
    CHECK(rf_deps_add_task(d, 12, NULL, 0, &missing) == RF_OK && missing == 0);
    CHECK(rf_deps_waiting(d) == 2);
    const uint8_t *m;
    CHECK(rf_deps_missing(d, 10, &m, &n) == RF_OK && n == 2);
    CHECK(memcmp(m, ids, 20) == 0 && memcmp(m + 20, ids + 20, 20) == 0);
    CHECK(rf_deps_missing(d, 12, &m, &n) == RF_ENOTFOUND);

    CHECK(rf_deps_mark_ready(d, ids, &rel, &n) == RF_OK && n == 0);
    CHECK(rf_deps_is_ready(d, ids));
    CHECK(rf_deps_mark_ready(d, ids, &rel, &n) == RF_OK && n == 0); /* idempotent */
    CHECK(rf_deps_missing(d, 10, &m, &n) == RF_OK && n == 1 && memcmp(m, ids + 20, 20) == 0);
    CHECK(rf_deps_mark_ready(d, ids + 20, &rel, &n) == RF_OK && n == 2);
    CHECK(rel[0] == 10 && rel[1] == 11); /* add order */
    CHECK(rf_deps_waiting(d) == 0);
    /* All ready now: runnable at once, nothing stored. */
    CHECK(rf_deps_add_task(d, 13, ids, 3, &missing) == RF_OK && missing == 0);
    CHECK(rf_deps_waiting(d) == 0);

    rf_deps_stats st;
    rf_deps_get_stats(d, &st);
    CHECK(st.ready_objects == 2 && st.waited_objects == 0 && st.released_total == 2);
    rf_deps_mark_missing(d, ids);
    CHECK(!rf_deps_is_ready(d, ids));
    CHECK(rf_deps_add_task(d, 14, ids, 3, &missing) == RF_OK && missing == 1);
    rf_deps_get_stats(d, &st);
    CHECK(st.ready_objects == 1 && st.waited_objects == 1 && st.waiting_tasks == 1);
    CHECK(rf_deps_remove_task(d, 14) == RF_OK);
    CHECK(rf_deps_remove_task(d, 14) == RF_ENOTFOUND);
    rf_deps_get_stats(d, &st);
    CHECK(st.waited_objects == 0 && st.waiting_tasks == 0);
    /* Free with tasks still waiting (ASan checks nothing leaks). */
    CHECK(rf_deps_add_task(d, 15, ids, 3, &missing) == RF_OK && missing == 1);
    rf_deps_free(d);
    rf_deps_free(NULL);
}

enum { K = 24, H = 48, MAXD = 5 };
typedef struct {
    int waiting;
    long seq;
    int ndeps;
    uint32_t deps[MAXD];
} mtask;

static int model_missing(const mtask *t, const int *ready, uint32_t *out) {
    int n = 0;
    for (int i = 0; i < t->ndeps; i++) {
        uint32_t o = t->deps[i];
        if (ready[o]) continue;
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= out[j] == o;
        if (!dup) out[n++] = o;
    }
    return n;
}

static void test_model(void) {
    rf_deps *d = rf_deps_new();
    int ready[K] = {0};
    static mtask tasks[H];
    memset(tasks, 0, sizeof(tasks));
    long seq = 0;
    uint64_t r = 99;
#define RND() (r = r * 6364136223846793005ULL + 1442695040888963407ULL, (uint32_t)(r >> 33))
    for (int step = 0; step < 40000; step++) {
        int op = RND() % 10;
        size_t n;
        if (op < 4) {
            int h = RND() % H;
            mtask *t = &tasks[h];
            uint8_t ids[MAXD * 20];
            int nd = RND() % (MAXD + 1);
            uint32_t deps[MAXD];
            for (int i = 0; i < nd; i++) {
                deps[i] = RND() % K;
                oid(ids + i * 20, deps[i]);
            }
            size_t missing;
            int rc = rf_deps_add_task(d, h, ids, nd, &missing);
            if (t->waiting) {
                CHECK(rc == RF_EEXIST);
                continue;
            }
            mtask nt = {0};
            nt.ndeps = nd;
            memcpy(nt.deps, deps, sizeof(deps));
            uint32_t mm[MAXD];
            int want = model_missing(&nt, ready, mm);
            CHECK(rc == RF_OK && missing == (size_t)want);
            if (want) {
                nt.waiting = 1;
                nt.seq = seq++;
                *t = nt;
            }
        } else if (op < 7) {
            uint32_t o = RND() % K;
            uint8_t id[20];
            oid(id, o);
            const int64_t *rel;
            CHECK(rf_deps_mark_ready(d, id, &rel, &n) == RF_OK);
            int was = ready[o];
            ready[o] = 1;
            /* Expected: waiting tasks now with nothing missing, by seq. */
            long last = -1;
            size_t count = 0;
            for (size_t i = 0; i < n; i++) {
                mtask *t = &tasks[rel[i]];
                uint32_t mm[MAXD];
                CHECK(t->waiting && model_missing(t, ready, mm) == 0);
                CHECK(t->seq > last);
                last = t->seq;
                t->waiting = 0;
            }
            for (int h = 0; h < H; h++) {
                uint32_t mm[MAXD];
                if (tasks[h].waiting) CHECK(model_missing(&tasks[h], ready, mm) > 0);
                count += tasks[h].waiting;
            }
            if (was) CHECK(n == 0);
            CHECK(rf_deps_waiting(d) == count);
        } else if (op < 8) {
            uint32_t o = RND() % K;
            uint8_t id[20];
            oid(id, o);
            rf_deps_mark_missing(d, id);
            /* Tasks still waiting were waiting on other deps; a now-missing
             * object does not get re-added to their lists. Model: only tasks
             * added from now on see it missing, so record readiness per task. */
            for (int h = 0; h < H; h++) {
                mtask *t = &tasks[h];
                if (!t->waiting) continue;
                /* Drop o from the model's deps when it was ready: the real
                 * table no longer waits on it for this task. */
                if (ready[o]) {
                    int k = 0;
                    for (int i = 0; i < t->ndeps; i++)
                        if (t->deps[i] != o) t->deps[k++] = t->deps[i];
                    t->ndeps = k;
                }
            }
            ready[o] = 0;
        } else if (op < 9) {
            int h = RND() % H;
            CHECK(rf_deps_remove_task(d, h) == (tasks[h].waiting ? RF_OK : RF_ENOTFOUND));
            tasks[h].waiting = 0;
        } else {
            int h = RND() % H;
            const uint8_t *m;
            int rc = rf_deps_missing(d, h, &m, &n);
            CHECK(rc == (tasks[h].waiting ? RF_OK : RF_ENOTFOUND));
            if (rc == RF_OK) {
                uint32_t mm[MAXD];
                int want = model_missing(&tasks[h], ready, mm);
                CHECK(n == (size_t)want);
                for (int i = 0; i < want && i < (int)n; i++) {
                    uint8_t id[20];
                    oid(id, mm[i]);
                    CHECK(memcmp(m + i * 20, id, 20) == 0);
                }
            }
        }
        for (uint32_t o = 0; o < K; o++) {
            uint8_t id[20];
            oid(id, o);
            CHECK(rf_deps_is_ready(d, id) == ready[o]);
        }
    }
    rf_deps_free(d);
}

int main(void) {
    test_basic();
    test_model();
    return check_done("test_deps");
}
