/* lineage.c -- see lineage.h. Record: ptr = spec copy, i64 = its length. */
#include "lineage.h"

#include <stdlib.h>
#include <string.h>

struct rf_lineage {
    rf_idtable *table;
    size_t bytes;
    uint64_t puts, removes;
};

rf_lineage *rf_lineage_new(void) {
    rf_lineage *l = calloc(1, sizeof(*l));
    if (!l) return NULL;
    l->table = rf_idtable_new(RF_LINEAGE_ID_SIZE);
    if (!l->table) {
        free(l);
        return NULL;
    }
    return l;
}

void rf_lineage_free(rf_lineage *l) {
    if (!l) return;
    size_t pos = 0;
    rf_idval *v;
    while (rf_idtable_next(l->table, &pos, NULL, &v)) free(v->ptr);
    rf_idtable_free(l->table);
    free(l);
}

int rf_lineage_put(rf_lineage *l, const uint8_t *task_id, const uint8_t *spec, size_t len) {
    if (len && !spec) return RF_EINVAL;
    /* Copy before touching the table so a failed malloc changes nothing;
     * at least one byte so an empty spec is still a non-NULL pointer. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return RF_ENOMEM;
    if (len) memcpy(copy, spec, len);
    rf_idval *v;
    int rc = rf_idtable_upsert(l->table, task_id, &v);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    if (rc == 0) {
        l->bytes -= (size_t)v->i64;
        free(v->ptr);
    }
    v->ptr = copy;
    v->i64 = (int64_t)len;
    l->bytes += len;
    l->puts++;
    return RF_OK;
}

int rf_lineage_get(const rf_lineage *l, const uint8_t *task_id, const uint8_t **spec, size_t *len) {
    rf_idval *v = rf_idtable_find(l->table, task_id);
    if (!v) return RF_ENOTFOUND;
    *spec = v->ptr;
    *len = (size_t)v->i64;
    return RF_OK;
}

int rf_lineage_contains(const rf_lineage *l, const uint8_t *task_id) {
    return rf_idtable_find(l->table, task_id) != NULL;
}

int rf_lineage_remove(rf_lineage *l, const uint8_t *task_id) {
    rf_idval old;
    if (rf_idtable_delete(l->table, task_id, &old) != RF_OK) return RF_ENOTFOUND;
    free(old.ptr);
    l->bytes -= (size_t)old.i64;
    l->removes++;
    return RF_OK;
}

size_t rf_lineage_len(const rf_lineage *l) { return rf_idtable_len(l->table); }

void rf_lineage_get_stats(const rf_lineage *l, rf_lineage_stats *out) {
    out->entries = rf_idtable_len(l->table);
    out->bytes = l->bytes;
    out->puts = l->puts;
    out->removes = l->removes;
}
