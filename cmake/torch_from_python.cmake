# Locate the installed torch through the Python interpreter that runs the build.
#
# We deliberately do not use `find_package(Torch)`: its CUDA part re-detects the
# toolkit (wrongly, behind a wrapper nvcc), wants nvrtc/cublas it cannot find on a
# minimal toolkit, and picks GPU archs from a GPU that build machines do not have.
# Everything an op library needs is the headers, four shared libraries and the ABI flag.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
"import os, torch
d = os.path.dirname(torch.__file__)
print(torch.__version__)
print(torch.version.cuda or '')
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(os.path.join(d, 'include'))
print(os.path.join(d, 'lib'))
try:
    import nvidia
    roots = [os.path.join(p, sub) for p in nvidia.__path__ for sub in ('cu13', 'cu12', '')]
    inc = [os.path.join(r, 'include') for r in roots if os.path.isfile(os.path.join(r, 'include', 'cublas_v2.h'))]
except ImportError:
    inc = []
print(inc[0] if inc else '')"
  OUTPUT_VARIABLE _torch_out
  RESULT_VARIABLE _torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR
    "sam2rl-fast: could not import torch with ${Python_EXECUTABLE}. Install torch first, "
    "then build with `pip install --no-build-isolation .`")
endif()
string(REPLACE "\n" ";" _torch_out "${_torch_out}")
list(GET _torch_out 0 TORCH_VERSION)
list(GET _torch_out 1 TORCH_CUDA_VERSION)
list(GET _torch_out 2 TORCH_CXX11_ABI)
list(GET _torch_out 3 TORCH_INCLUDE_DIR)
list(GET _torch_out 4 TORCH_LIB_DIR)
list(GET _torch_out 5 TORCH_NVIDIA_INCLUDE_DIR)

add_library(torch_ops_deps INTERFACE)
target_include_directories(torch_ops_deps SYSTEM INTERFACE
  "${TORCH_INCLUDE_DIR}" "${TORCH_INCLUDE_DIR}/torch/csrc/api/include")
target_compile_definitions(torch_ops_deps INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
foreach(_lib c10 torch_cpu torch)
  find_library(TORCH_LIB_${_lib} ${_lib} PATHS "${TORCH_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(torch_ops_deps INTERFACE "${TORCH_LIB_${_lib}}")
endforeach()
message(STATUS "sam2rl-fast: torch ${TORCH_VERSION} (CUDA '${TORCH_CUDA_VERSION}') at ${TORCH_INCLUDE_DIR}")
