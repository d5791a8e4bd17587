# Shared INTERFACE settings targets (warnings, sanitizers), linked by every trainsim target.
add_library(trainsim_settings INTERFACE)
target_compile_features(trainsim_settings INTERFACE cxx_std_20)
target_compile_options(trainsim_settings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
                       -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Wunused
                       -Woverloaded-virtual -Wimplicit-fallthrough)
if(TRAINSIM_WERROR)
  target_compile_options(trainsim_settings INTERFACE -Werror)
endif()
if(TRAINSIM_SANITIZE)
  target_compile_options(trainsim_settings INTERFACE -fsanitize=address,undefined
                         -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(trainsim_settings INTERFACE -fsanitize=address,undefined)
endif()
if(TRAINSIM_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "TRAINSIM_FUZZ needs clang (libFuzzer): configure with CXX=clang++")
  endif()
  target_compile_options(trainsim_settings INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                         -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(trainsim_settings INTERFACE -fsanitize=address,undefined)
endif()
# Each layer's headers are reached as "core/time.hpp", "model/transformer.hpp", ...
target_include_directories(trainsim_settings INTERFACE ${PROJECT_SOURCE_DIR}/sim)
target_compile_definitions(trainsim_settings INTERFACE
                           TRAINSIM_VERSION="${PROJECT_VERSION}")
