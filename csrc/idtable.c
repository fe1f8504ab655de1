/* idtable.c -- see idtable.h. */
#include "idtable.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define MIN_CAP 16

struct rf_idtable {
    size_t key_size;
    size_t cap;      /* power of two */
    size_t mask;
    size_t len;
    uint64_t *hashes; /* 0 = empty slot */
    uint8_t *keys;    /* cap * key_size */
    rf_idval *vals;
    uint64_t inserts, deletes, grows;
};

/* Never 0: 0 is the empty marker. */
static inline uint64_t fix_hash(uint64_t h) { return h ? h : 1; }

static int alloc_arrays(size_t cap, size_t key_size, uint64_t **hashes, uint8_t **keys,
                        rf_idval **vals) {
    *hashes = calloc(cap, sizeof(uint64_t));
    *keys = malloc(cap * key_size);
    *vals = malloc(cap * sizeof(rf_idval));
    if (!*hashes || !*keys || !*vals) {
        free(*hashes);
        free(*keys);
        free(*vals);
        return RF_ENOMEM;
    }
    return RF_OK;
}

rf_idtable *rf_idtable_new(size_t key_size) {
    if (key_size == 0 || key_size > RF_IDTABLE_MAX_KEY) return NULL;
    rf_idtable *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->key_size = key_size;
    t->cap = MIN_CAP;
    t->mask = MIN_CAP - 1;
    if (alloc_arrays(t->cap, key_size, &t->hashes, &t->keys, &t->vals) != RF_OK) {
        free(t);
        return NULL;
    }
    return t;
}

void rf_idtable_free(rf_idtable *t) {
    if (!t) return;
    free(t->hashes);
    free(t->keys);
    free(t->vals);
    free(t);
}

size_t rf_idtable_len(const rf_idtable *t) { return t->len; }
size_t rf_idtable_key_size(const rf_idtable *t) { return t->key_size; }

void rf_idtable_get_stats(const rf_idtable *t, rf_idtable_stats *out) {
    out->len = t->len;
    out->cap = t->cap;
    out->inserts = t->inserts;
    out->deletes = t->deletes;
    out->grows = t->grows;
}

uint64_t rf_idtable_hash(const rf_idtable *t, const uint8_t *key) {
    return fix_hash(rf_hash64(key, t->key_size));
}

static inline uint8_t *key_at(const rf_idtable *t, size_t i) { return t->keys + i * t->key_size; }

/* Slot holding key, or the empty slot that ends its probe chain. */
static inline size_t probe(const rf_idtable *t, const uint8_t *key, uint64_t h) {
    size_t i = (size_t)h & t->mask;
    for (;;) {
        uint64_t sh = t->hashes[i];
        if (sh == 0) return i;
        if (sh == h && memcmp(key_at(t, i), key, t->key_size) == 0) return i;
        i = (i + 1) & t->mask;
    }
}

rf_idval *rf_idtable_find_h(const rf_idtable *t, const uint8_t *key, uint64_t h) {
    h = fix_hash(h);
    size_t i = probe(t, key, h);
    return t->hashes[i] ? &t->vals[i] : NULL;
}

rf_idval *rf_idtable_find(const rf_idtable *t, const uint8_t *key) {
    return rf_idtable_find_h(t, key, rf_idtable_hash(t, key));
}

static int grow(rf_idtable *t) {
    size_t ncap = t->cap * 2;
    uint64_t *nh;
    uint8_t *nk;
    rf_idval *nv;
    if (ncap < t->cap || alloc_arrays(ncap, t->key_size, &nh, &nk, &nv) != RF_OK) return RF_ENOMEM;
    size_t nmask = ncap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        uint64_t h = t->hashes[i];
        if (!h) continue;
        size_t j = (size_t)h & nmask;
        while (nh[j]) j = (j + 1) & nmask;
        nh[j] = h;
        memcpy(nk + j * t->key_size, key_at(t, i), t->key_size);
        nv[j] = t->vals[i];
    }
    free(t->hashes);
    free(t->keys);
    free(t->vals);
    t->hashes = nh;
    t->keys = nk;
    t->vals = nv;
    t->cap = ncap;
    t->mask = nmask;
    t->grows++;
    return RF_OK;
}

int rf_idtable_upsert_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval **val) {
    h = fix_hash(h);
    size_t i = probe(t, key, h);
    if (t->hashes[i]) {
        *val = &t->vals[i];
        return 0;
    }
    /* Keep load <= 3/4 so linear-probe chains stay short. */
    if ((t->len + 1) * 4 > t->cap * 3) {
        if (grow(t) != RF_OK) return RF_ENOMEM;
        i = probe(t, key, h);
    }
    t->hashes[i] = h;
    memcpy(key_at(t, i), key, t->key_size);
    memset(&t->vals[i], 0, sizeof(rf_idval));
    t->len++;
    t->inserts++;
    *val = &t->vals[i];
    return 1;
}

int rf_idtable_upsert(rf_idtable *t, const uint8_t *key, rf_idval **val) {
    return rf_idtable_upsert_h(t, key, rf_idtable_hash(t, key), val);
}

int rf_idtable_delete_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval *old) {
    h = fix_hash(h);
    size_t i = probe(t, key, h);
    if (!t->hashes[i]) return RF_ENOTFOUND;
    if (old) *old = t->vals[i];
    /* Backward shift: pull later members of the chain into the hole when the
     * hole lies on their probe path (between their home slot and them). */
    size_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        uint64_t hj = t->hashes[j];
        if (!hj) break;
        size_t home = (size_t)hj & t->mask;
        size_t dist_j = (j - home) & t->mask;    /* how far j sits from home */
        size_t dist_hole = (j - hole) & t->mask; /* how far back the hole is */
        if (dist_hole <= dist_j) {
            t->hashes[hole] = hj;
            memcpy(key_at(t, hole), key_at(t, j), t->key_size);
            t->vals[hole] = t->vals[j];
            hole = j;
        }
    }
    t->hashes[hole] = 0;
    t->len--;
    t->deletes++;
    return RF_OK;
}

int rf_idtable_delete(rf_idtable *t, const uint8_t *key, rf_idval *old) {
    return rf_idtable_delete_h(t, key, rf_idtable_hash(t, key), old);
}

int rf_idtable_next(const rf_idtable *t, size_t *pos, const uint8_t **key, rf_idval **val) {
    for (size_t i = *pos; i < t->cap; i++) {
        if (t->hashes[i]) {
            if (key) *key = key_at(t, i);
            if (val) *val = &t->vals[i];
            *pos = i + 1;
            return 1;
        }
    }
    *pos = t->cap;
    return 0;
}

void rf_idtable_clear(rf_idtable *t) {
    memset(t->hashes, 0, t->cap * sizeof(uint64_t));
    t->deletes += t->len;
    t->len = 0;
}
