/* idtable.h -- open-addressing hash table keyed by fixed-size binary ids.
 *
 * Linear probing over a power-of-two array, grown at 3/4 load, with
 * backward-shift deletion (no tombstones, so probe chains never rot).
 * Each slot keeps the key's 64-bit hash (0 marks an empty slot), the key
 * bytes, and a small value record the caller interprets.
 *
 * Pointers returned into the table (rf_idval *, key pointers) stay valid only
 * until the next insert or delete on the same table: both may move slots. */
#ifndef RF_IDTABLE_H
#define RF_IDTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "rf_errors.h"

#define RF_IDTABLE_MAX_KEY 64

/* The value record. Users pick the fields they need; a new entry starts zeroed. */
typedef struct rf_idval {
    int64_t i64;
    void *ptr;
    uint32_t u32;
    uint32_t flags;
} rf_idval;

typedef struct rf_idtable_stats {
    size_t len;        /* live entries */
    size_t cap;        /* slots */
    uint64_t inserts;  /* entries created */
    uint64_t deletes;  /* entries removed */
    uint64_t grows;    /* times the array was doubled */
} rf_idtable_stats;

typedef struct rf_idtable rf_idtable;

/* key_size in 1..RF_IDTABLE_MAX_KEY (16 and 20 for ids, 8 for int64 handles).
 * Returns NULL on a bad key size or out of memory. */
rf_idtable *rf_idtable_new(size_t key_size);
void rf_idtable_free(rf_idtable *t);

size_t rf_idtable_len(const rf_idtable *t);
size_t rf_idtable_key_size(const rf_idtable *t);
void rf_idtable_get_stats(const rf_idtable *t, rf_idtable_stats *out);

/* The hash the table uses for a key; callers that already hold it (for
 * example a cached Python hash) pass it to the *_h variants to skip rehashing. */
uint64_t rf_idtable_hash(const rf_idtable *t, const uint8_t *key);

rf_idval *rf_idtable_find(const rf_idtable *t, const uint8_t *key);
rf_idval *rf_idtable_find_h(const rf_idtable *t, const uint8_t *key, uint64_t h);

/* Find or create. Sets *val to the record; returns 1 if created (zeroed
 * record), 0 if it already existed, RF_ENOMEM if growing failed. */
int rf_idtable_upsert(rf_idtable *t, const uint8_t *key, rf_idval **val);
int rf_idtable_upsert_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval **val);

/* Remove; copies the old record into *old if old is non-NULL.
 * Returns 0 or RF_ENOTFOUND. */
int rf_idtable_delete(rf_idtable *t, const uint8_t *key, rf_idval *old);
int rf_idtable_delete_h(rf_idtable *t, const uint8_t *key, uint64_t h, rf_idval *old);

/* Iterate: start with *pos = 0; returns 1 and fills key/val while entries
 * remain, 0 at the end. The table must not be modified during iteration. */
int rf_idtable_next(const rf_idtable *t, size_t *pos, const uint8_t **key, rf_idval **val);

/* Remove every entry (keeps the allocation). */
void rf_idtable_clear(rf_idtable *t);

#endif
