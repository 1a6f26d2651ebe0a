//! How freed memory is kept for reuse. A forward pass allocates and frees the same few
//! activation sizes (up to tens of MiB) thousands of times; glibc's default returns such blocks
//! to the kernel and faults them in again, zeroed, on the next allocation. On SmolLM2 that was
//! 1.96 million page faults and about a seventh of an eval's CPU time (issue 14); with the
//! settings below, 0.17 million, at the same peak RSS.

/// The free memory at the top of a heap above which glibc returns it to the kernel, while the
/// engine runs ([`reuse_freed_memory`]).
const TRIM_THRESHOLD: usize = 256 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;
    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
        pub fn malloc_trim(pad: usize) -> c_int;
    }
    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_MMAP_THRESHOLD: c_int = -3;
}

/// Keeps freed blocks below 32 MiB in the heap (glibc's largest mmap threshold) and returns heap
/// memory to the kernel only when 256 MiB lie free at its top. Does nothing off glibc.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before the engine allocates in
    // earnest. A refused value (return 0) leaves glibc's default, which is only slower.
    unsafe {
        glibc::mallopt(glibc::M_MMAP_THRESHOLD, 32 << 20);
        glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as i32);
    }
}

/// Runs `f`, a one-off step that allocates a lot and frees it all (building a tokenizer), with
/// glibc's default trim threshold, then hands the heap's free pages back ([`return_freed_memory`]).
/// Under [`reuse_freed_memory`]'s threshold, memory freed at the top of a worker thread's arena
/// stays resident: `malloc_trim` releases a heap's top only in the main arena. Building Gemma 3's
/// 262k-token tokenizer on a pool thread left 35 MB so, under the weights that loaded next.
pub fn trimming<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as in `reuse_freed_memory`; 128 KiB is glibc's default.
    unsafe {
        glibc::mallopt(glibc::M_TRIM_THRESHOLD, 128 << 10);
    }
    let out = f();
    return_freed_memory();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as above.
    unsafe {
        glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as i32);
    }
    out
}

/// Hands the heap's free pages back to the kernel (glibc's `malloc_trim`), wherever they lie.
/// [`reuse_freed_memory`] keeps freed blocks for the forward pass to reuse, which also keeps
/// what a one-off step freed, such as the transient memory of building a tokenizer (about 60 MB
/// resident for Gemma 3's 262k vocabulary); a model calls this before it loads its weights.
/// Does nothing off glibc.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it takes no pointers.
    unsafe {
        glibc::malloc_trim(0);
    }
}
