/* ids.h -- task and object ids, and the process-local reference table.
 *
 * A task id is 16 bytes. An object id is the producing task's id followed by
 * a 4-byte little-endian index: 1..N for return values, and indices with the
 * high bit set for objects created by put(). So object -> producing task is a
 * prefix, and lineage lookup is a hash lookup. */
#ifndef RF_IDS_H
#define RF_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "idtable.h"

#define RF_TASK_ID_SIZE 16
#define RF_OBJECT_ID_SIZE 20
#define RF_PUT_BIT 0x80000000u
#define RF_INDEX_MASK 0x7fffffffu

/* Build an object id from a task id and a return index (1..2^31-1). */
int rf_object_id_for_return(const uint8_t task_id[RF_TASK_ID_SIZE], uint32_t index,
                            uint8_t out[RF_OBJECT_ID_SIZE]);
/* Build an object id for the index-th put() of a task (0..2^31-1). */
int rf_object_id_for_put(const uint8_t task_id[RF_TASK_ID_SIZE], uint32_t index,
                         uint8_t out[RF_OBJECT_ID_SIZE]);
/* The raw 4-byte index (including the put bit). */
uint32_t rf_object_id_raw_index(const uint8_t oid[RF_OBJECT_ID_SIZE]);
static inline uint32_t rf_object_id_index(const uint8_t oid[RF_OBJECT_ID_SIZE]) {
    return rf_object_id_raw_index(oid) & RF_INDEX_MASK;
}
static inline int rf_object_id_is_put(const uint8_t oid[RF_OBJECT_ID_SIZE]) {
    return (rf_object_id_raw_index(oid) & RF_PUT_BIT) != 0;
}

/* ---- Reference table ----
 * Counts live ObjectRef instances per object id in this process, and reports
 * net held/released transitions since the previous drain. Only 0<->1
 * transitions of a count touch the dirty list, so drain costs O(ids whose
 * state may have changed), not O(refs created). */

typedef struct rf_reftable_stats {
    size_t live_ids;      /* ids with count > 0 */
    size_t entries;       /* table entries (live + pending report) */
    size_t dirty_ids;     /* ids awaiting the next drain */
    size_t reported_ids;  /* ids reported held at the last drain */
    uint64_t increfs;
    uint64_t decrefs;
    uint64_t drains;
    uint64_t added_total;    /* ids ever reported in `added` */
    uint64_t released_total; /* ids ever reported in `released` */
} rf_reftable_stats;

typedef struct rf_reftable rf_reftable;

rf_reftable *rf_reftable_new(void);
void rf_reftable_free(rf_reftable *rt);

/* h is rf_hash64(oid, 20) (the caller usually has it cached). */
int rf_reftable_incref(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE], uint64_t h);
/* RF_ENOTFOUND if the id holds no references (a caller bug). */
int rf_reftable_decref(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE], uint64_t h);
int64_t rf_reftable_count(const rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE]);

/* Mark a held id as already known to the node (the submitter of a task is
 * counted as holding its returns): the next drain will not announce it. */
int rf_reftable_set_reported(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE]);

/* Compute net changes since the previous drain. On success the ids are
 * packed 20 bytes each in buffers owned by rt, valid until the next call. */
int rf_reftable_drain(rf_reftable *rt, const uint8_t **added, size_t *n_added,
                      const uint8_t **released, size_t *n_released);

void rf_reftable_get_stats(const rf_reftable *rt, rf_reftable_stats *out);

/* Iterate over the ids held now (count > 0): start with *pos = 0; returns 1 and
 * sets *oid (valid until the table changes) while there is one, then 0. */
int rf_reftable_next_held(const rf_reftable *rt, size_t *pos, const uint8_t **oid);

#endif
