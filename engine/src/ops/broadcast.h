/* broadcast.h - iteration over up to three broadcast inputs and one
 * contiguous output, shared by the elementwise ops. */
#ifndef TIDE_BROADCAST_H
#define TIDE_BROADCAST_H
#include "internal.h"

typedef struct {
    int ndim, nin;
    int64_t shape[TD_MAX_DIMS];
    int64_t stride[3][TD_MAX_DIMS]; /* 0 on broadcast dims */
    const float *base[3];
    bool flat;                      /* every input contiguous, same shape */
} td_bcast;

/* Fills bc for the inputs; fails naming op and the shapes. */
int td_broadcast(const char *op, int nin, td_tensor *const *ins, td_bcast *bc);

/* Offset of flat output index i in input k. */
static inline int64_t td_bcast_offset(const td_bcast *bc, int k, int64_t i) {
    int64_t off = 0;
    for (int d = bc->ndim - 1; d >= 0; d--) {
        off += (i % bc->shape[d]) * bc->stride[k][d];
        i /= bc->shape[d];
    }
    return off;
}

/* Runs BODY with float x (and y, z) read from the inputs and float *o
 * pointing at the output element. Rows of the last dim amortize the index
 * arithmetic; rows go parallel above TD_PAR_MIN elements. */
#define TD_BCAST_LOOP(bc, out, BODY)                                                    \
    do {                                                                                \
        const td_bcast *bc_ = (bc);                                                     \
        float *out_ = (out);                                                            \
        int64_t n_ = td_shape_numel(bc_->ndim, bc_->shape);                             \
        if (bc_->flat) {                                                                \
            const float *p0_ = bc_->base[0], *p1_ = bc_->base[1], *p2_ = bc_->base[2];  \
            (void)p1_; (void)p2_;                                                       \
            _Pragma("omp parallel for simd if (n_ > TD_PAR_MIN)")                       \
            for (int64_t i_ = 0; i_ < n_; i_++) {                                       \
                float x = p0_[i_]; (void)x;                                             \
                float y = bc_->nin > 1 ? p1_[i_] : 0.0f; (void)y;                       \
                float z = bc_->nin > 2 ? p2_[i_] : 0.0f; (void)z;                       \
                float *o = out_ + i_;                                                   \
                BODY;                                                                   \
            }                                                                           \
        } else {                                                                        \
            int64_t inner_ = bc_->ndim ? bc_->shape[bc_->ndim - 1] : 1;                 \
            int64_t rows_ = inner_ ? n_ / inner_ : 0;                                   \
            int last_ = bc_->ndim ? bc_->ndim - 1 : 0;                                  \
            _Pragma("omp parallel for if (n_ > TD_PAR_MIN)")                            \
            for (int64_t r_ = 0; r_ < rows_; r_++) {                                    \
                const float *q0_ = bc_->base[0] + td_bcast_offset(bc_, 0, r_ * inner_); \
                const float *q1_ = bc_->nin > 1 ? bc_->base[1] + td_bcast_offset(bc_, 1, r_ * inner_) : 0; \
                const float *q2_ = bc_->nin > 2 ? bc_->base[2] + td_bcast_offset(bc_, 2, r_ * inner_) : 0; \
                int64_t s0_ = bc_->ndim ? bc_->stride[0][last_] : 0;                    \
                int64_t s1_ = bc_->ndim ? bc_->stride[1][last_] : 0;                    \
                int64_t s2_ = bc_->ndim ? bc_->stride[2][last_] : 0;                    \
                if (s0_ == 1 && (!q1_ || s1_ == 1) && (!q2_ || s2_ == 1)) {             \
                    /* unit strides (broadcast in leading dims only): vectorized; */     \
                    /* absent inputs read q0_ and are replaced by 0 */                   \
                    const bool h1_ = q1_ != 0, h2_ = q2_ != 0;                          \
                    const float *u1_ = h1_ ? q1_ : q0_, *u2_ = h2_ ? q2_ : q0_;         \
                    _Pragma("omp simd")                                                 \
                    for (int64_t j_ = 0; j_ < inner_; j_++) {                           \
                        float x = q0_[j_]; (void)x;                                     \
                        float y = h1_ ? u1_[j_] : 0.0f; (void)y;                        \
                        float z = h2_ ? u2_[j_] : 0.0f; (void)z;                        \
                        float *o = out_ + r_ * inner_ + j_;                             \
                        BODY;                                                           \
                    }                                                                   \
                    continue;                                                           \
                }                                                                       \
                for (int64_t j_ = 0; j_ < inner_; j_++) {                               \
                    float x = q0_[j_ * s0_]; (void)x;                                   \
                    float y = q1_ ? q1_[j_ * s1_] : 0.0f; (void)y;                      \
                    float z = q2_ ? q2_[j_ * s2_] : 0.0f; (void)z;                      \
                    float *o = out_ + r_ * inner_ + j_;                                 \
                    BODY;                                                               \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    } while (0)

#endif
