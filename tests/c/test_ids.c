/* Unit tests for ids.c: object id layout and the reference table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hash.h"
#include "ids.h"

static void oid(uint8_t out[20], uint8_t task_byte, uint32_t index) {
    uint8_t task[16];
    memset(task, task_byte, 16);
    CHECK(rf_object_id_for_return(task, index, out) == RF_OK);
}

static void test_layout(void) {
    uint8_t task[16], o[20];
    for (int i = 0; i < 16; i++) task[i] = (uint8_t)i;
    CHECK(rf_object_id_for_return(task, 0, o) == RF_EINVAL);
    CHECK(rf_object_id_for_return(task, 0x80000000u, o) == RF_EINVAL);
    CHECK(rf_object_id_for_return(task, 0x01020304u, o) == RF_OK);
    CHECK(memcmp(o, task, 16) == 0);
    CHECK(o[16] == 4 && o[17] == 3 && o[18] == 2 && o[19] == 1); /* little-endian */
    CHECK(rf_object_id_index(o) == 0x01020304u && !rf_object_id_is_put(o));
    CHECK(rf_object_id_for_put(task, 7, o) == RF_OK);
    CHECK(o[19] == 0x80 && rf_object_id_index(o) == 7 && rf_object_id_is_put(o));
    CHECK(rf_object_id_for_put(task, 0x80000000u, o) == RF_EINVAL);
}

static int contains(const uint8_t *ids, size_t n, const uint8_t *id) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(ids + i * 20, id, 20) == 0) return 1;
    return 0;
}

static void test_reftable(void) {
    rf_reftable *rt = rf_reftable_new();
    uint8_t a[20], b[20], c[20];
    oid(a, 1, 1);
    oid(b, 1, 2);
    oid(c, 2, 1);
    uint64_t ha = rf_hash64(a, 20), hb = rf_hash64(b, 20), hc = rf_hash64(c, 20);
    const uint8_t *add, *rel;
    size_t na, nr;

    CHECK(rf_reftable_decref(rt, a, ha) == RF_ENOTFOUND);
    CHECK(rf_reftable_incref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_incref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_incref(rt, b, hb) == RF_OK);
    CHECK(rf_reftable_count(rt, a) == 2 && rf_reftable_count(rt, b) == 1);
    /* c comes and goes between drains: released (its holder may have been
     * counted at submission without a report). */
    CHECK(rf_reftable_incref(rt, c, hc) == RF_OK);
    CHECK(rf_reftable_decref(rt, c, hc) == RF_OK);
    CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
    CHECK(na == 2 && nr == 1 && contains(add, na, a) && contains(add, na, b) && contains(rel, nr, c));
    rf_reftable_stats st;
    rf_reftable_get_stats(rt, &st);
    CHECK(st.live_ids == 2 && st.entries == 2 && st.dirty_ids == 0 && st.reported_ids == 2);

    /* No change -> empty drain. a drops to 0 and back: no net change. */
    CHECK(rf_reftable_decref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_decref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_incref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
    CHECK(na == 0 && nr == 0);

    CHECK(rf_reftable_decref(rt, a, ha) == RF_OK);
    CHECK(rf_reftable_decref(rt, b, hb) == RF_OK);
    CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
    CHECK(na == 0 && nr == 2 && contains(rel, nr, a) && contains(rel, nr, b));
    rf_reftable_get_stats(rt, &st);
    CHECK(st.live_ids == 0 && st.entries == 0 && st.reported_ids == 0);
    CHECK(st.added_total == 2 && st.released_total == 3);

    /* Many ids: the dirty list and output buffers grow. */
    enum { N = 5000 };
    uint8_t many[20];
    for (uint32_t i = 1; i <= N; i++) {
        oid(many, 9, i);
        CHECK(rf_reftable_incref(rt, many, rf_hash64(many, 20)) == RF_OK);
    }
    CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
    CHECK(na == N && nr == 0);
    for (uint32_t i = 1; i <= N; i += 2) {
        oid(many, 9, i);
        CHECK(rf_reftable_decref(rt, many, rf_hash64(many, 20)) == RF_OK);
    }
    CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
    CHECK(na == 0 && nr == N / 2);
    rf_reftable_get_stats(rt, &st);
    CHECK(st.entries == N / 2 && st.live_ids == N / 2);
    rf_reftable_free(rt);
}

/* Random incref/decref/drain against a model of what the drains must say. */
static void test_reftable_model(void) {
    enum { K = 64 };
    int count[K] = {0}, reported[K] = {0}, touched[K] = {0};
    rf_reftable *rt = rf_reftable_new();
    uint64_t r = 12345;
    uint8_t id[20];
    for (int step = 0; step < 50000; step++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((r >> 33) % K);
        int op = (int)((r >> 20) % 7);
        oid(id, 3, (uint32_t)k + 1);
        uint64_t h = rf_hash64(id, 20);
        if (op < 3) {
            CHECK(rf_reftable_incref(rt, id, h) == RF_OK);
            if (count[k]++ == 0) touched[k] = 1;
        } else if (op < 6) {
            CHECK(rf_reftable_decref(rt, id, h) == (count[k] ? RF_OK : RF_ENOTFOUND));
            if (count[k]) count[k]--;
        } else {
            const uint8_t *add, *rel;
            size_t na, nr;
            CHECK(rf_reftable_drain(rt, &add, &na, &rel, &nr) == RF_OK);
            size_t want_a = 0, want_r = 0;
            for (int j = 0; j < K; j++) {
                uint8_t jd[20];
                oid(jd, 3, (uint32_t)j + 1);
                int held = count[j] > 0;
                CHECK(contains(add, na, jd) == (held && !reported[j]));
                CHECK(contains(rel, nr, jd) == (!held && (reported[j] || touched[j])));
                want_a += held && !reported[j];
                want_r += !held && (reported[j] || touched[j]);
                reported[j] = held;
                touched[j] = 0;
            }
            CHECK(na == want_a && nr == want_r);
        }
        CHECK(rf_reftable_count(rt, id) == count[k]);
        if (step % 97 == 0) { /* next_held: exactly the ids with a count, each once */
            int seen[K] = {0}, n = 0;
            size_t pos = 0;
            const uint8_t *held;
            while (rf_reftable_next_held(rt, &pos, &held)) {
                int j = -1;
                for (int i = 0; i < K && j < 0; i++) {
                    uint8_t jd[20];
                    oid(jd, 3, (uint32_t)i + 1);
                    if (memcmp(jd, held, 20) == 0) j = i;
                }
                CHECK(j >= 0 && count[j] > 0 && !seen[j]);
                if (j >= 0) seen[j] = 1;
                n++;
            }
            int want = 0;
            for (int i = 0; i < K; i++) want += count[i] > 0;
            CHECK(n == want);
        }
    }
    rf_reftable_free(rt);
}

int main(void) {
    test_layout();
    test_reftable();
    test_reftable_model();
    return check_done("test_ids");
}
