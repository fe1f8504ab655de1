/* ids.c -- see ids.h. */
#include "ids.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"

static void put_index(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int rf_object_id_for_return(const uint8_t task_id[RF_TASK_ID_SIZE], uint32_t index,
                            uint8_t out[RF_OBJECT_ID_SIZE]) {
    if (index == 0 || index > RF_INDEX_MASK) return RF_EINVAL;
    memcpy(out, task_id, RF_TASK_ID_SIZE);
    put_index(out + RF_TASK_ID_SIZE, index);
    return RF_OK;
}

int rf_object_id_for_put(const uint8_t task_id[RF_TASK_ID_SIZE], uint32_t index,
                         uint8_t out[RF_OBJECT_ID_SIZE]) {
    if (index > RF_INDEX_MASK) return RF_EINVAL;
    memcpy(out, task_id, RF_TASK_ID_SIZE);
    put_index(out + RF_TASK_ID_SIZE, index | RF_PUT_BIT);
    return RF_OK;
}

uint32_t rf_object_id_raw_index(const uint8_t oid[RF_OBJECT_ID_SIZE]) {
    const uint8_t *p = oid + RF_TASK_ID_SIZE;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- Reference table ---- */

/* Entry record: i64 = live count; flags below. */
#define REF_REPORTED 1u /* reported held at the last drain */
#define REF_DIRTY 2u    /* key is on the dirty list */

/* A growable array of 20-byte ids. */
typedef struct idvec {
    uint8_t *data;
    size_t len, cap;
} idvec;

static int idvec_reserve(idvec *v, size_t n) {
    if (n <= v->cap) return RF_OK;
    size_t ncap = v->cap ? v->cap : 64;
    while (ncap < n) ncap *= 2;
    uint8_t *nd = realloc(v->data, ncap * RF_OBJECT_ID_SIZE);
    if (!nd) return RF_ENOMEM;
    v->data = nd;
    v->cap = ncap;
    return RF_OK;
}

static int idvec_push(idvec *v, const uint8_t *id) {
    if (idvec_reserve(v, v->len + 1) != RF_OK) return RF_ENOMEM;
    memcpy(v->data + v->len * RF_OBJECT_ID_SIZE, id, RF_OBJECT_ID_SIZE);
    v->len++;
    return RF_OK;
}

struct rf_reftable {
    rf_idtable *table;
    idvec dirty;     /* keys, not slot pointers: slots move on insert/delete */
    idvec added, released;
    size_t live_ids;
    size_t reported_ids;
    uint64_t increfs, decrefs, drains, added_total, released_total;
};

rf_reftable *rf_reftable_new(void) {
    rf_reftable *rt = calloc(1, sizeof(*rt));
    if (!rt) return NULL;
    rt->table = rf_idtable_new(RF_OBJECT_ID_SIZE);
    if (!rt->table) {
        free(rt);
        return NULL;
    }
    return rt;
}

void rf_reftable_free(rf_reftable *rt) {
    if (!rt) return;
    rf_idtable_free(rt->table);
    free(rt->dirty.data);
    free(rt->added.data);
    free(rt->released.data);
    free(rt);
}

/* Called on a 0<->1 transition: remember to look at this id at the next drain.
 * The caller guarantees room on the dirty list. */
static void mark_dirty(rf_reftable *rt, rf_idval *v, const uint8_t *oid) {
    if (v->flags & REF_DIRTY) return;
    memcpy(rt->dirty.data + rt->dirty.len * RF_OBJECT_ID_SIZE, oid, RF_OBJECT_ID_SIZE);
    rt->dirty.len++;
    v->flags |= REF_DIRTY;
}

int rf_reftable_incref(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE], uint64_t h) {
    rf_idval *v;
    int rc = rf_idtable_upsert_h(rt->table, oid, h, &v);
    if (rc < 0) return rc;
    if (rc == 1 && idvec_reserve(&rt->dirty, rf_idtable_len(rt->table)) != RF_OK) {
        /* Each entry sits on the dirty list at most once, so keeping room for
         * every entry means decref (which runs in __dealloc__) never fails. */
        rf_idtable_delete_h(rt->table, oid, h, NULL);
        return RF_ENOMEM;
    }
    if (v->i64 == 0) {
        mark_dirty(rt, v, oid);
        rt->live_ids++;
    }
    v->i64++;
    rt->increfs++;
    return RF_OK;
}

int rf_reftable_decref(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE], uint64_t h) {
    rf_idval *v = rf_idtable_find_h(rt->table, oid, h);
    if (!v || v->i64 <= 0) return RF_ENOTFOUND;
    rt->decrefs++;
    if (--v->i64 > 0) return RF_OK;
    rt->live_ids--;
    mark_dirty(rt, v, oid); /* cannot fail: room reserved in incref */
    return RF_OK;
}

int rf_reftable_set_reported(rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE]) {
    rf_idval *v = rf_idtable_find(rt->table, oid);
    if (!v || v->i64 <= 0) return RF_ENOTFOUND;
    if (!(v->flags & REF_REPORTED)) {
        v->flags |= REF_REPORTED;
        rt->reported_ids++;
    }
    return RF_OK;
}

int64_t rf_reftable_count(const rf_reftable *rt, const uint8_t oid[RF_OBJECT_ID_SIZE]) {
    rf_idval *v = rf_idtable_find(rt->table, oid);
    return v ? v->i64 : 0;
}

int rf_reftable_drain(rf_reftable *rt, const uint8_t **added, size_t *n_added,
                      const uint8_t **released, size_t *n_released) {
    rt->added.len = 0;
    rt->released.len = 0;
    /* Reserve the worst case first, so the loop below cannot fail halfway
     * and lose transitions. */
    size_t need = rt->dirty.len ? rt->dirty.len : 1;
    idvec *outs[2] = {&rt->added, &rt->released};
    for (int k = 0; k < 2; k++) {
        if (outs[k]->cap < need) {
            uint8_t *nd = realloc(outs[k]->data, need * RF_OBJECT_ID_SIZE);
            if (!nd) return RF_ENOMEM;
            outs[k]->data = nd;
            outs[k]->cap = need;
        }
    }
    for (size_t i = 0; i < rt->dirty.len; i++) {
        const uint8_t *oid = rt->dirty.data + i * RF_OBJECT_ID_SIZE;
        uint64_t h = rf_idtable_hash(rt->table, oid);
        rf_idval *v = rf_idtable_find_h(rt->table, oid, h);
        if (!v || !(v->flags & REF_DIRTY)) continue;
        v->flags &= ~REF_DIRTY;
        int held = v->i64 > 0;
        int reported = (v->flags & REF_REPORTED) != 0;
        if (held && !reported) {
            v->flags |= REF_REPORTED;
            rt->reported_ids++;
            idvec_push(&rt->added, oid); /* cannot fail: reserved */
        } else if (!held) {
            /* Also when never reported: the node manager counts a submitter as
             * holding its task's returns from the submission on, so a ref made
             * and dropped between two drains must still be released. */
            if (reported) {
                v->flags &= ~REF_REPORTED;
                rt->reported_ids--;
            }
            idvec_push(&rt->released, oid);
        }
        if (!held && !(v->flags & REF_REPORTED)) rf_idtable_delete_h(rt->table, oid, h, NULL);
    }
    rt->dirty.len = 0;
    rt->drains++;
    rt->added_total += rt->added.len;
    rt->released_total += rt->released.len;
    *added = rt->added.data;
    *n_added = rt->added.len;
    *released = rt->released.data;
    *n_released = rt->released.len;
    return RF_OK;
}

int rf_reftable_next_held(const rf_reftable *rt, size_t *pos, const uint8_t **oid) {
    rf_idval *v;
    while (rf_idtable_next(rt->table, pos, oid, &v))
        if (v->i64 > 0) return 1;
    return 0;
}

void rf_reftable_get_stats(const rf_reftable *rt, rf_reftable_stats *out) {
    out->live_ids = rt->live_ids;
    out->entries = rf_idtable_len(rt->table);
    out->dirty_ids = rt->dirty.len;
    out->reported_ids = rt->reported_ids;
    out->increfs = rt->increfs;
    out->decrefs = rt->decrefs;
    out->drains = rt->drains;
    out->added_total = rt->added_total;
    out->released_total = rt->released_total;
}
