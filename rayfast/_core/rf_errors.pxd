# The C tables' return codes (csrc/rf_errors.h), for the modules over them.
# The store has its own codes (store.pxd).

cdef extern from "rf_errors.h" nogil:
    enum:
        RF_OK
        RF_ENOMEM
        RF_EINVAL
        RF_ENOTFOUND
        RF_EEXIST
