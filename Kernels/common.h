// Shared helpers for every kernel file. Results must match the CPU reference: no contraction into FMA.
#pragma OPENCL FP_CONTRACT OFF

// Strided walk for broadcasting ops (mirrors BroadcastWalk in Sources/HistoCore/Ops/Broadcast.swift):
// the output is contiguous; operand k reads element `coords · stride[k]`.
#define WALK_MAX_RANK 8
typedef struct {
    int rank;
    int shape[WALK_MAX_RANK];
    int stride[3][WALK_MAX_RANK];
} Walk;

inline int walk_offset(const Walk* w, int operand, int index) {
    int offset = 0;
    for (int axis = w->rank - 1; axis >= 0; --axis) {
        int coord = index % w->shape[axis];
        index /= w->shape[axis];
        offset += coord * w->stride[operand][axis];
    }
    return offset;
}

// The windows o·stride ..< o·stride + extent (o in 0..<count) that contain position pos ≥ 0: o in [*first, *last]
// (none when first > last). Lets scatter-adds of sliding windows run as gathers.
inline void covering_windows(int pos, int extent, int stride, int count, int* first, int* last) {
    int lowest = pos - extent + 1;
    *first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
    *last = min(pos / stride, count - 1);
}
