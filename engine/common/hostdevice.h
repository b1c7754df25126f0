// The host/device marker for math bodies shared by CPU loops and CUDA kernels.
#pragma once
#if defined(__CUDACC__)
#define IPSNET_HD __host__ __device__ __forceinline__
#else
#define IPSNET_HD inline
#endif
