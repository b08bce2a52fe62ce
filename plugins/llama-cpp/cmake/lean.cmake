# What the llama_cpp backend builds of llama.cpp, and how: read by cmake right after each
# project() of llama.cpp's tree (CMAKE_PROJECT_INCLUDE, which .cargo/config.toml sets, written by
# scripts/setup.sh; the binding's build script forwards every CMAKE_* variable of its environment
# to cmake). It cuts a cold build on 2 cores roughly in half, for the same kernels.
#
# 1. Only the libraries the binding links (ggml-base, ggml-cpu, ggml, llama), not llama.cpp's
#    `common` utilities. llama-cpp-2 asks for llama-cpp-sys-2 with its default features, which
#    include `common`, so the build script configures LLAMA_BUILD_COMMON=ON: the chat parsers,
#    the jinja engine, json-schema and cpp-httplib, half of the compile time, for `llama_rs_*`
#    helpers the plugin never calls (it turns llama-cpp-2's `common` feature off). The build
#    script then prints one warning ("common feature was enabled, but no common library was
#    found"); the wrapper it compiles for `common` stays unreferenced, so nothing links it.
# 2. The compute at -O3, the rest at -O1: ggml-cpu (every kernel a decoding step runs) keeps the
#    Release flags; ggml-base (graph building, the GGUF reader, reference quantizers) and llama
#    (model graphs, KV-cache bookkeeping, loading) run a few times per step or once per load,
#    and compile in far less time at -O1. Decoding speed before and after: BENCHMARKS.md.
if(PROJECT_NAME STREQUAL "llama.cpp")
    set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
    function(swift_rs_lean_optimisation)
        foreach(target llama ggml-base)
            if(TARGET ${target})
                # After the Release flags on the command line, so this -O wins.
                target_compile_options(${target} PRIVATE -O1)
            endif()
        endforeach()
    endfunction()
    # At the end of the top directory, when every target exists.
    cmake_language(DEFER CALL swift_rs_lean_optimisation)
endif()
