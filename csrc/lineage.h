/* lineage.h -- task id (16 bytes) -> the task's serialized spec.
 *
 * Keeps what is needed to re-execute a task whose outputs were lost. The
 * table owns a malloc'd copy of each spec; C never sees Python objects. */
#ifndef RF_LINEAGE_H
#define RF_LINEAGE_H

#include <stddef.h>
#include <stdint.h>

#include "idtable.h"

#define RF_LINEAGE_ID_SIZE 16

typedef struct rf_lineage_stats {
    size_t entries;
    size_t bytes; /* sum of stored spec lengths */
    uint64_t puts;
    uint64_t removes;
} rf_lineage_stats;

typedef struct rf_lineage rf_lineage;

rf_lineage *rf_lineage_new(void);
void rf_lineage_free(rf_lineage *l);

/* Store a copy of spec[0..len), replacing any previous spec for task_id. */
int rf_lineage_put(rf_lineage *l, const uint8_t *task_id, const uint8_t *spec, size_t len);
/* Borrow the stored spec; valid until the next put/remove for any id.
 * RF_ENOTFOUND if absent. */
int rf_lineage_get(const rf_lineage *l, const uint8_t *task_id, const uint8_t **spec, size_t *len);
int rf_lineage_contains(const rf_lineage *l, const uint8_t *task_id);
int rf_lineage_remove(rf_lineage *l, const uint8_t *task_id);
size_t rf_lineage_len(const rf_lineage *l);
void rf_lineage_get_stats(const rf_lineage *l, rf_lineage_stats *out);

#endif
