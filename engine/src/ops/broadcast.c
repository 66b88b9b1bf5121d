/* broadcast.c - shapes and strides of broadcast inputs. */
#include "broadcast.h"
#include <stdio.h>
#include <string.h>

int td_broadcast(const char *op, int nin, td_tensor *const *ins, td_bcast *bc) {
    memset(bc, 0, sizeof *bc);
    bc->nin = nin;
    for (int k = 0; k < nin; k++) {
        if (!ins[k]) return td_failc("%s: input %d is NULL", op, k);
        if (ins[k]->ndim > bc->ndim) bc->ndim = ins[k]->ndim;
    }
    for (int d = 0; d < bc->ndim; d++) bc->shape[d] = 1;
    for (int k = 0; k < nin; k++) {
        const td_tensor *t = ins[k];
        int lead = bc->ndim - t->ndim;
        for (int d = 0; d < t->ndim; d++) {
            int64_t s = t->shape[d], *o = &bc->shape[d + lead];
            if (s == *o || s == 1) continue;
            if (*o != 1) {
                char msg[512] = "", a[TD_SHAPE_BUF];
                for (int j = 0; j < nin; j++) {
                    size_t len = strlen(msg);
                    snprintf(msg + len, sizeof msg - len, j ? " and %s" : "%s", td_shape_str(ins[j], a));
                }
                return td_failc("%s: shapes %s do not broadcast (dim %d)", op, msg, d + lead);
            }
            *o = s;
        }
    }
    bc->flat = true;
    for (int k = 0; k < nin; k++) {
        const td_tensor *t = ins[k];
        int lead = bc->ndim - t->ndim;
        bc->base[k] = t->data;
        for (int d = 0; d < bc->ndim; d++) {
            int j = d - lead;
            bc->stride[k][d] = (j < 0 || t->shape[j] != bc->shape[d]) ? 0 : t->stride[j];
        }
        if (t->ndim != bc->ndim || !td_same_shape(t, ins[0]) || !td_is_contiguous(t)) bc->flat = false;
    }
    return 0;
}
