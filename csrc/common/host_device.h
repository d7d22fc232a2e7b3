#pragma once
// Helpers marked S2F_HOST_DEVICE are compiled for both the CPU kernels (by the C++
// compiler) and the CUDA kernels (by nvcc), so CPU-only CI exercises the arithmetic
// of kernels it cannot run.
#if defined(__CUDACC__)
#define S2F_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define S2F_HOST_DEVICE inline
#endif
