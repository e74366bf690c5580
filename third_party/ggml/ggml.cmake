# Resolve the pinned ggml and add it to the build.
#
# ggml's source is never part of this repository. Either the user names a checkout
# (OMNIMODEL_GGML_DIR, as a CMake or environment variable: offline builds, CUDA/Jetson trees), or
# fetch_ggml.py downloads the pinned source distribution once, verifies it and caches it.

file(READ "${CMAKE_CURRENT_LIST_DIR}/pin.json" _omni_pin)
string(JSON OMNIMODEL_GGML_PIN_VERSION GET "${_omni_pin}" ggml_version)

if (NOT OMNIMODEL_GGML_DIR AND DEFINED ENV{OMNIMODEL_GGML_DIR})
    set(OMNIMODEL_GGML_DIR "$ENV{OMNIMODEL_GGML_DIR}")
endif()

if (OMNIMODEL_GGML_DIR)
    get_filename_component(OMNIMODEL_GGML_DIR "${OMNIMODEL_GGML_DIR}" ABSOLUTE)
    if (NOT EXISTS "${OMNIMODEL_GGML_DIR}/CMakeLists.txt" OR NOT EXISTS "${OMNIMODEL_GGML_DIR}/include/ggml.h")
        message(FATAL_ERROR "OMNIMODEL_GGML_DIR=${OMNIMODEL_GGML_DIR} is not a ggml source tree "
                            "(expected CMakeLists.txt and include/ggml.h)")
    endif()
    message(STATUS "omnimodel: using ggml from OMNIMODEL_GGML_DIR=${OMNIMODEL_GGML_DIR}")
else()
    if (NOT Python_EXECUTABLE)
        find_package(Python 3.10 REQUIRED COMPONENTS Interpreter)
    endif()
    execute_process(
        COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/fetch_ggml.py"
        OUTPUT_VARIABLE _omni_fetch_out
        RESULT_VARIABLE _omni_fetch_rc
        OUTPUT_STRIP_TRAILING_WHITESPACE)
    if (NOT _omni_fetch_rc EQUAL 0)
        message(FATAL_ERROR "omnimodel: could not obtain ggml ${OMNIMODEL_GGML_PIN_VERSION} (see messages above). "
                            "Set OMNIMODEL_GGML_DIR to a local ggml source tree to build offline.")
    endif()
    string(REGEX REPLACE ".*\n" "" _omni_fetch_out "${_omni_fetch_out}")
    set(OMNIMODEL_GGML_DIR "${_omni_fetch_out}")
    message(STATUS "omnimodel: using pinned ggml ${OMNIMODEL_GGML_PIN_VERSION} from ${OMNIMODEL_GGML_DIR}")
endif()

# ggml is linked into libomnimodel; its own install rules and pkg-config are not wanted.
set(GGML_BUILD_TESTS    OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(GGML_NATIVE ${OMNIMODEL_NATIVE} CACHE BOOL "" FORCE)
set(GGML_CUDA   ${OMNIMODEL_CUDA}   CACHE BOOL "" FORCE)
# The CPU backend as llama.cpp builds it. ggml's standalone default leaves llamafile's tinyBLAS out,
# which makes every F32/F16/BF16/Q8_0/Q4_0 matmul fall back to one dot product per output element
# (2-3x slower at real widths). OpenMP runs the graph's threads; the repack buffer type stores
# Q4_0/Q4_K/IQ4_NL/Q2_K... weights in the interleaved layouts of the fast GEMM kernels.
# omnimodel._runtime.cpu_features() reports what was compiled in, and a test holds it there.
set(GGML_LLAMAFILE  ON CACHE BOOL "" FORCE)
set(GGML_OPENMP     ON CACHE BOOL "" FORCE)
set(GGML_CPU_REPACK ON CACHE BOOL "" FORCE)
set(_omni_saved_shared ${BUILD_SHARED_LIBS})
set(BUILD_SHARED_LIBS OFF)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
add_subdirectory("${OMNIMODEL_GGML_DIR}" "${CMAKE_BINARY_DIR}/ggml" EXCLUDE_FROM_ALL)
set(BUILD_SHARED_LIBS ${_omni_saved_shared})
if (NOT GGML_OPENMP_ENABLED)
    message(WARNING "omnimodel: OpenMP was not found; ggml falls back to its own thread pool "
                    "(install libgomp / libomp for llama.cpp's threading)")
endif()
