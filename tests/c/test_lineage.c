/* Unit tests for lineage.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lineage.h"

int main(void) {
    rf_lineage *l = rf_lineage_new();
    uint8_t t1[16] = {1}, t2[16] = {2};
    const uint8_t *spec;
    size_t len;
    CHECK(rf_lineage_get(l, t1, &spec, &len) == RF_ENOTFOUND);
    CHECK(!rf_lineage_contains(l, t1));
    uint8_t buf[8] = "abcdefg";
    CHECK(rf_lineage_put(l, t1, buf, 7) == RF_OK);
    buf[0] = 'z'; /* the table holds its own copy */
    CHECK(rf_lineage_get(l, t1, &spec, &len) == RF_OK && len == 7 && memcmp(spec, "abcdefg", 7) == 0);
    CHECK(rf_lineage_put(l, t1, (const uint8_t *)"xy", 2) == RF_OK);
    CHECK(rf_lineage_get(l, t1, &spec, &len) == RF_OK && len == 2 && memcmp(spec, "xy", 2) == 0);
    CHECK(rf_lineage_put(l, t2, NULL, 0) == RF_OK); /* empty spec is fine */
    CHECK(rf_lineage_get(l, t2, &spec, &len) == RF_OK && len == 0);
    CHECK(rf_lineage_put(l, t2, NULL, 3) == RF_EINVAL);
    rf_lineage_stats st;
    rf_lineage_get_stats(l, &st);
    CHECK(st.entries == 2 && st.bytes == 2);
    CHECK(rf_lineage_remove(l, t1) == RF_OK);
    CHECK(rf_lineage_remove(l, t1) == RF_ENOTFOUND);
    CHECK(rf_lineage_len(l) == 1);
    /* Many entries, then free with them still inside (checked by ASan). */
    for (uint32_t i = 0; i < 2000; i++) {
        uint8_t id[16] = {0};
        memcpy(id, &i, 4);
        id[15] = 0x5a;
        CHECK(rf_lineage_put(l, id, (const uint8_t *)&i, sizeof(i)) == RF_OK);
    }
    rf_lineage_get_stats(l, &st);
    CHECK(st.entries == 2001 && st.bytes == 2000 * sizeof(uint32_t));
    rf_lineage_free(l);
    rf_lineage_free(NULL);
    return check_done("test_lineage");
}
