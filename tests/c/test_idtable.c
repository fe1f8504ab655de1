/* Unit tests for idtable.c and hash.c: basic ops, growth, backward-shift
 * deletion against a brute-force model, and hash/derive sanity. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hash.h"
#include "idtable.h"

static void make_key(uint8_t *k, size_t ks, uint32_t i) {
    memset(k, 0xab, ks);
    memcpy(k + ks - 4, &i, 4); /* keys that differ only at the end */
}

static void test_basic(void) {
    CHECK(rf_idtable_new(0) == NULL);
    CHECK(rf_idtable_new(RF_IDTABLE_MAX_KEY + 1) == NULL);
    rf_idtable *t = rf_idtable_new(20);
    uint8_t k[20];
    make_key(k, 20, 7);
    rf_idval *v;
    CHECK(rf_idtable_find(t, k) == NULL);
    CHECK(rf_idtable_upsert(t, k, &v) == 1);
    CHECK(v->i64 == 0 && v->ptr == NULL && v->flags == 0);
    v->i64 = 42;
    CHECK(rf_idtable_upsert(t, k, &v) == 0);
    CHECK(v->i64 == 42);
    CHECK(rf_idtable_len(t) == 1);
    rf_idval old;
    CHECK(rf_idtable_delete(t, k, &old) == RF_OK);
    CHECK(old.i64 == 42);
    CHECK(rf_idtable_delete(t, k, NULL) == RF_ENOTFOUND);
    CHECK(rf_idtable_len(t) == 0);
    rf_idtable_free(t);
    rf_idtable_free(NULL);
}

/* Random inserts/deletes checked against a flat array model. */
static void test_model(size_t ks) {
    enum { N = 3000 };
    static int64_t model[N]; /* -1 = absent */
    for (int i = 0; i < N; i++) model[i] = -1;
    rf_idtable *t = rf_idtable_new(ks);
    uint8_t k[32];
    size_t live = 0;
    for (int step = 0; step < 60000; step++) {
        uint32_t i = (uint32_t)(check_rand() % N);
        make_key(k, ks, i);
        rf_idval *v;
        switch (check_rand() % 3) {
        case 0:
        case 1: {
            int rc = rf_idtable_upsert(t, k, &v);
            CHECK(rc == (model[i] < 0 ? 1 : 0));
            if (rc == 1) live++;
            else CHECK(v->i64 == model[i]);
            v->i64 = model[i] = step;
            break;
        }
        default: {
            int rc = rf_idtable_delete(t, k, NULL);
            CHECK(rc == (model[i] < 0 ? RF_ENOTFOUND : RF_OK));
            if (model[i] >= 0) live--;
            model[i] = -1;
        }
        }
        if (step % 5000 == 0) {
            for (uint32_t j = 0; j < N; j++) {
                make_key(k, ks, j);
                v = rf_idtable_find(t, k);
                CHECK((v != NULL) == (model[j] >= 0));
                if (v) CHECK(v->i64 == model[j]);
            }
        }
    }
    CHECK(rf_idtable_len(t) == live);
    size_t pos = 0, seen = 0;
    const uint8_t *key;
    rf_idval *v;
    while (rf_idtable_next(t, &pos, &key, &v)) {
        uint32_t i;
        memcpy(&i, key + ks - 4, 4);
        CHECK(i < N && model[i] == v->i64);
        seen++;
    }
    CHECK(seen == live);
    rf_idtable_stats st;
    rf_idtable_get_stats(t, &st);
    CHECK(st.len == live && st.grows > 0 && st.len * 4 <= st.cap * 3);
    rf_idtable_clear(t);
    CHECK(rf_idtable_len(t) == 0);
    make_key(k, ks, 1);
    CHECK(rf_idtable_find(t, k) == NULL);
    rf_idtable_free(t);
}

/* Keys forced into one probe chain (same hash) exercise the shift logic. */
static void test_collisions(void) {
    rf_idtable *t = rf_idtable_new(16);
    uint8_t k[16];
    rf_idval *v;
    for (uint32_t i = 0; i < 10; i++) {
        make_key(k, 16, i);
        CHECK(rf_idtable_upsert_h(t, k, 12345, &v) == 1);
        v->i64 = i;
    }
    for (uint32_t i = 0; i < 10; i += 2) {
        make_key(k, 16, i);
        CHECK(rf_idtable_delete_h(t, k, 12345, NULL) == RF_OK);
    }
    for (uint32_t i = 0; i < 10; i++) {
        make_key(k, 16, i);
        v = rf_idtable_find_h(t, k, 12345);
        CHECK((v != NULL) == (i % 2 == 1));
        if (v) CHECK(v->i64 == i);
    }
    /* Hash 0 is remapped internally and must still work. */
    make_key(k, 16, 99);
    CHECK(rf_idtable_upsert_h(t, k, 0, &v) == 1);
    CHECK(rf_idtable_find_h(t, k, 0) == v);
    rf_idtable_free(t);
}

static void test_hash(void) {
    uint8_t buf[64];
    for (int i = 0; i < 64; i++) buf[i] = (uint8_t)i;
    /* Deterministic, length-sensitive, and every input bit matters. */
    CHECK(rf_hash64(buf, 20) == rf_hash64(buf, 20));
    CHECK(rf_hash64(buf, 0) != rf_hash64(buf, 1));
    uint8_t z[3] = {0, 0, 0};
    CHECK(rf_hash64(z, 2) != rf_hash64(z, 3));
    for (size_t n = 1; n <= 40; n++) {
        uint64_t h0 = rf_hash64(buf, n);
        for (size_t bit = 0; bit < n * 8; bit++) {
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            uint64_t h1 = rf_hash64(buf, n);
            buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int flipped = __builtin_popcountll(h0 ^ h1);
            CHECK(flipped > 8 && flipped < 56); /* avalanche, loosely */
        }
    }
    /* Same bytes at different alignments hash the same. */
    uint8_t a[40];
    memcpy(a + 3, buf, 20);
    CHECK(rf_hash64(a + 3, 20) == rf_hash64(buf, 20));
    CHECK(rf_hash64_seed(buf, 20, 1) != rf_hash64_seed(buf, 20, 2));
}

static void test_derive(void) {
    uint8_t parent[16] = {1, 2, 3};
    uint8_t a[16], b[16], c[16];
    rf_derive_id(parent, 16, 5, a);
    rf_derive_id(parent, 16, 5, b);
    CHECK(memcmp(a, b, 16) == 0);
    rf_derive_id(parent, 16, 6, c);
    CHECK(memcmp(a, c, 16) != 0);
    parent[15] ^= 1;
    rf_derive_id(parent, 16, 5, c);
    CHECK(memcmp(a, c, 16) != 0);
    /* Many children: no collisions in the first 8 bytes, bits balanced. */
    enum { N = 4096 };
    static uint64_t seen[N];
    long ones = 0;
    for (uint64_t i = 0; i < N; i++) {
        rf_derive_id(parent, 16, i, a);
        memcpy(&seen[i], a, 8);
        for (int j = 0; j < 16; j++) ones += __builtin_popcount(a[j]);
        for (uint64_t j = 0; j < i; j++) CHECK(seen[j] != seen[i]);
    }
    double frac = (double)ones / (N * 128.0);
    CHECK(frac > 0.49 && frac < 0.51);
}

int main(void) {
    test_basic();
    test_model(20);
    test_model(16);
    test_model(8);
    test_collisions();
    test_hash();
    test_derive();
    return check_done("test_idtable");
}
