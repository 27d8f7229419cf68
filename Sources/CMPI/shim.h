// Open MPI's C interface (Debian: libopenmpi-dev). MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM and MPI_IN_PLACE are
// macros with casts that Swift cannot import, so the calls HistoMPI makes are wrapped here.
#include <mpi.h>

static inline int histo_mpi_init(void) {
    int provided = 0;
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
}
static inline int histo_mpi_finalize(void) { return MPI_Finalize(); }
static inline int histo_mpi_rank(void) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}
static inline int histo_mpi_size(void) {
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}
// Sums `count` floats over every rank into `values` on every rank.
static inline int histo_mpi_allreduce_sum_in_place(float *values, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
// The least and the largest of one 64-bit value over every rank.
static inline int histo_mpi_min_max(unsigned long long value, unsigned long long *least,
                                    unsigned long long *largest) {
    int status = MPI_Allreduce(&value, least, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    if (status != MPI_SUCCESS) return status;
    return MPI_Allreduce(&value, largest, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
}
static inline int histo_mpi_broadcast(void *bytes, int count, int root) {
    return MPI_Bcast(bytes, count, MPI_BYTE, root, MPI_COMM_WORLD);
}
static inline int histo_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
