/* idtable.c -- see idtable.h. */
#include "idtable.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define MIN_CAP 16

/* One slot = [hash][value record][key bytes], stored contiguously so a
 * lookup usually touches a single cache line. */
typedef struct slot_head {
    uint64_t hash; /* 0 = empty */
    rf_idval val;
} slot_head;

struct rf_idtable {
    size_t key_size;
    size_t stride;   /* bytes per slot, a multiple of 8 */
    size_t cap;      /* power of two */
    size_t mask;
    size_t len;
    uint8_t *slots;
    uint64_t inserts, deletes, grows;
};

/* Never 0: 0 is the empty marker. */
static inline uint64_t fix_hash(uint64_t h) { return h ? h : 1; }

static inline slot_head *slot_at(const rf_idtable *t, size_t i) {
    return (slot_head *)(t->slots + i * t->stride);
}
static inline uint8_t *key_of(slot_head *s) { return (uint8_t *)(s + 1); }

rf_idtable *rf_idtable_new(size_t key_size) {
    if (key_size == 0 || key_size > RF_IDTABLE_MAX_KEY) return NULL;
    rf_idtable *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->key_size = key_size;
    t->stride = (sizeof(slot_head) + key_size + 7) & ~(size_t)7;
    t->cap = MIN_CAP;
    t->mask = MIN_CAP - 1;
    t->slots = calloc(t->cap, t->stride);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    return t;
}

void rf_idtable_free(rf_idtable *t) {
    if (!t) return;
    free(t->slots);
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

/* Slot holding key, or the empty slot that ends its probe chain. */
static inline size_t probe(const rf_idtable *t, const uint8_t *key, uint64_t h) {
    size_t i = (size_t)h & t->mask;
    for (;;) {
        slot_head *s = slot_at(t, i);
        if (s->hash == 0) return i;
        if (s->hash == h && memcmp(key_of(s), key, t->key_size) == 0) return i;
        i = (i + 1) & t->mask;
    }
}

rf_idval *rf_idtable_find_h(const rf_idtable *t, const uint8_t *key, uint64_t h) {
    h = fix_hash(h);
    slot_head *s = slot_at(t, probe(t, key, h));
    return s->hash ? &s->val : NULL;
}

rf_idval *rf_idtable_find(const rf_idtable *t, const uint8_t *key) {
    return rf_idtable_find_h(t, key, rf_idtable_hash(t, key));
}

static int grow(rf_idtable *t) {
    size_t ncap = t->cap * 2;
    if (ncap < t->cap || ncap > SIZE_MAX / t->stride) return RF_ENOMEM;
    uint8_t *ns = calloc(ncap, t->stride);
    if (!ns) return RF_ENOMEM;
    size_t nmask = ncap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        slot_head *s = slot_at(t, i);
        if (!s->hash) continue;
        size_t j = (size_t)s->hash & nmask;
        while (((slot_head *)(ns + j * t->stride))->hash) j = (j + 1) & nmask;
        memcpy(ns + j * t->stride, s, t->stride);
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    t->mask = nmask;
    t->grows++;
    return RF_OK;
}

int rf_idtable_upsert_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval **val) {
    h = fix_hash(h);
    size_t i = probe(t, key, h);
    slot_head *s = slot_at(t, i);
    if (s->hash) {
        *val = &s->val;
        return 0;
    }
    /* Keep load <= 3/4 so linear-probe chains stay short. */
    if ((t->len + 1) * 4 > t->cap * 3) {
        if (grow(t) != RF_OK) return RF_ENOMEM;
        s = slot_at(t, probe(t, key, h));
    }
    s->hash = h;
    memset(&s->val, 0, sizeof(rf_idval));
    memcpy(key_of(s), key, t->key_size);
    t->len++;
    t->inserts++;
    *val = &s->val;
    return 1;
}

int rf_idtable_upsert(rf_idtable *t, const uint8_t *key, rf_idval **val) {
    return rf_idtable_upsert_h(t, key, rf_idtable_hash(t, key), val);
}

int rf_idtable_delete_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval *old) {
    h = fix_hash(h);
    size_t hole = probe(t, key, h);
    slot_head *s = slot_at(t, hole);
    if (!s->hash) return RF_ENOTFOUND;
    if (old) *old = s->val;
    /* Backward shift: pull later members of the chain into the hole when the
     * hole lies on their probe path (between their home slot and them). */
    size_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        slot_head *sj = slot_at(t, j);
        if (!sj->hash) break;
        size_t home = (size_t)sj->hash & t->mask;
        size_t dist_j = (j - home) & t->mask;    /* how far j sits from home */
        size_t dist_hole = (j - hole) & t->mask; /* how far back the hole is */
        if (dist_hole <= dist_j) {
            memcpy(slot_at(t, hole), sj, t->stride);
            hole = j;
        }
    }
    slot_at(t, hole)->hash = 0;
    t->len--;
    t->deletes++;
    return RF_OK;
}

int rf_idtable_delete(rf_idtable *t, const uint8_t *key, rf_idval *old) {
    return rf_idtable_delete_h(t, key, rf_idtable_hash(t, key), old);
}

int rf_idtable_next(const rf_idtable *t, size_t *pos, const uint8_t **key, rf_idval **val) {
    for (size_t i = *pos; i < t->cap; i++) {
        slot_head *s = slot_at(t, i);
        if (s->hash) {
            if (key) *key = key_of(s);
            if (val) *val = &s->val;
            *pos = i + 1;
            return 1;
        }
    }
    *pos = t->cap;
    return 0;
}

void rf_idtable_clear(rf_idtable *t) {
    for (size_t i = 0; i < t->cap; i++) slot_at(t, i)->hash = 0;
    t->deletes += t->len;
    t->len = 0;
}
