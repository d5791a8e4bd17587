# CUDA detection for kernels/ and calibrate/ (issue 7). Everything under sim/ builds without it.
#
# TRAINSIM_BUILD_CALIBRATE: AUTO (default: build when a CUDA compiler and cuBLASLt are found),
# ON (fail the configure when they are not), OFF. NCCL is optional (without it the collective
# measurements are disabled, with a message); MPI is optional (multi-node NCCL sweeps).
# Architectures: 80;90 unless CMAKE_CUDA_ARCHITECTURES is given.
set(TRAINSIM_BUILD_CALIBRATE AUTO CACHE STRING "Build kernels/ and calibrate/ (AUTO, ON, OFF)")
set_property(CACHE TRAINSIM_BUILD_CALIBRATE PROPERTY STRINGS AUTO ON OFF)
set(TRAINSIM_HAVE_CUDA OFF)
set(TRAINSIM_HAVE_NCCL OFF)
set(TRAINSIM_HAVE_MPI OFF)

if(NOT TRAINSIM_BUILD_CALIBRATE STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_why "")
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(TARGET CUDA::cublasLt AND TARGET CUDA::cudart)
      set(TRAINSIM_HAVE_CUDA ON)
    else()
      set(_why "CUDA found but not cuBLASLt")
    endif()
  else()
    set(_why "no CUDA compiler (check_language(CUDA))")
  endif()
  if(TRAINSIM_HAVE_CUDA)
    find_path(NCCL_INCLUDE_DIR nccl.h
              HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}/include
              PATHS /usr/include /usr/local/include)
    find_library(NCCL_LIBRARY nccl
                 HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
                       ${CUDAToolkit_LIBRARY_ROOT}/lib64
                 PATHS /usr/lib/x86_64-linux-gnu /usr/local/lib)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(TRAINSIM_HAVE_NCCL ON)
      message(STATUS "trainsim: NCCL found (${NCCL_LIBRARY}): collective measurements enabled")
    else()
      message(STATUS "trainsim: NCCL not found: collective measurements disabled")
    endif()
    find_package(MPI COMPONENTS CXX QUIET)
    if(MPI_CXX_FOUND AND TRAINSIM_HAVE_NCCL)
      set(TRAINSIM_HAVE_MPI ON)
      message(STATUS "trainsim: MPI found: multi-node NCCL sweeps under mpirun enabled")
    endif()
    message(STATUS "trainsim: building kernels/ and calibrate/ for CUDA architectures "
                   "${CMAKE_CUDA_ARCHITECTURES}")
  elseif(TRAINSIM_BUILD_CALIBRATE STREQUAL "ON")
    message(FATAL_ERROR "TRAINSIM_BUILD_CALIBRATE=ON but ${_why}")
  else()
    message(STATUS "trainsim: calibrate/ not built: ${_why}")
  endif()
endif()
