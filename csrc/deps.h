/* deps.h -- the dependency table: tasks (int64 handles) waiting for objects.
 *
 * An object is either ready (local and sealed) or not. A task added with some
 * deps not ready waits until the last of them is marked ready; mark_ready
 * returns the tasks it released, in the order they were added. A task whose
 * deps are all ready at add time is runnable at once and is not stored. */
#ifndef RF_DEPS_H
#define RF_DEPS_H

#include <stddef.h>
#include <stdint.h>

#include "idtable.h"

#define RF_DEPS_ID_SIZE 20

typedef struct rf_deps_stats {
    size_t waiting_tasks;
    size_t ready_objects;
    size_t waited_objects; /* objects with at least one waiting task */
    uint64_t added_total;  /* tasks that had to wait */
    uint64_t released_total;
    uint64_t removed_total;
} rf_deps_stats;

typedef struct rf_deps rf_deps;

rf_deps *rf_deps_new(void);
void rf_deps_free(rf_deps *d);

/* ids: n ids of RF_DEPS_ID_SIZE bytes, packed. Sets *missing to the number of
 * distinct deps not ready. RF_EEXIST if the handle is already waiting. */
int rf_deps_add_task(rf_deps *d, int64_t handle, const uint8_t *ids, size_t n, size_t *missing);

/* Mark ready (idempotent). On success *released points at *n handles, in add
 * order, in a buffer owned by d and valid until the next call on d. */
int rf_deps_mark_ready(rf_deps *d, const uint8_t *oid, const int64_t **released, size_t *n);

/* The object is no longer ready; tasks already released are unaffected. */
void rf_deps_mark_missing(rf_deps *d, const uint8_t *oid);
int rf_deps_is_ready(const rf_deps *d, const uint8_t *oid);

/* Cancel a waiting task; RF_ENOTFOUND if it is not waiting. */
int rf_deps_remove_task(rf_deps *d, int64_t handle);

/* The deps a waiting task still lacks, packed, in the order given at add
 * time; pointer valid until the next modifying call. RF_ENOTFOUND if the
 * task is not waiting. */
int rf_deps_missing(const rf_deps *d, int64_t handle, const uint8_t **ids, size_t *n);

size_t rf_deps_waiting(const rf_deps *d);
void rf_deps_get_stats(const rf_deps *d, rf_deps_stats *out);

#endif
