/* rf_errors.h -- the return codes of the C tables (idtable, ids, deps,
 * lineage, queue). The object store keeps its own RF_STORE_* codes (store.h):
 * the same numbers mean other things there. */
#ifndef RF_ERRORS_H
#define RF_ERRORS_H

#define RF_OK 0
#define RF_ENOMEM (-1)
#define RF_EINVAL (-2)
#define RF_ENOTFOUND (-3)
#define RF_EEXIST (-4)

#endif
