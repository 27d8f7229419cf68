// OpenCL 1.2 is the newest version every driver we target (PoCL, NVIDIA, AMD, Intel) implements.
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
