//! How freed memory is kept during training (glibc's malloc, which libtorch's CPU allocator
//! calls). By default glibc hands a block of at least its mmap threshold (128 KiB, raised as
//! such blocks are freed, to at most 32 MiB) straight back to the kernel when it is freed, and
//! trims the heap's top above twice that; a training pass allocates and frees the same
//! activation-sized blocks thousands of times a step, so each came back as fresh pages the
//! kernel faulted in and zeroed: 7% of a LoRA SFT step's CPU time in page faults, zeroing and
//! malloc's own bookkeeping on the AMD EPYC machines (BENCHMARKS.md, "Where a LoRA SFT step
//! goes"). [`keep_freed_memory`] raises both thresholds once, so freed blocks are reused; the
//! peak (what a step needs at most) stays what it was.

/// Tells glibc's malloc to keep freed blocks of up to 1 GiB for reuse instead of returning
/// them to the kernel. Does nothing on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const GIB: i32 = 1 << 30;
        // SAFETY: mallopt only changes malloc's tuning parameters; it returns 0 on a refused
        // value, which leaves glibc's defaults (a slower step, nothing worse). Some glibc
        // versions refuse an mmap threshold above 32 MiB.
        let ok = unsafe {
            (mallopt(M_MMAP_THRESHOLD, GIB) == 1 || mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1)
                && mallopt(M_TRIM_THRESHOLD, GIB) == 1
        };
        if !ok {
            tracing::debug!(
                "glibc refused the malloc thresholds; freed memory goes back to the kernel"
            );
        }
    }
}
