//! Large output buffers backed by transparent huge pages where the kernel allows it.
//!
//! Neighbour lists of large systems are hundreds of megabytes written once. With 4 KiB pages the
//! first write to each page is a page fault, and those faults cost more than the search itself;
//! asking for 2 MiB pages (`madvise(MADV_HUGEPAGE)`, honoured when THP is in `madvise` or
//! `always` mode) removes almost all of them. Elsewhere this is a no-op.

/// Buffers smaller than this keep ordinary pages.
const HUGE_PAGE_THRESHOLD: usize = 2 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Advises the kernel to back the capacity of `buffer` with huge pages. Call before the first
/// write; pages already touched are not affected.
pub fn advise_huge_pages<T>(buffer: &mut Vec<T>) {
    let bytes = buffer.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE_PAGE_THRESHOLD {
        return;
    }
    let start = buffer.as_mut_ptr() as usize;
    let aligned_start = start.next_multiple_of(HUGE_PAGE);
    let aligned_end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    if aligned_end <= aligned_start {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the range lies inside the allocation owned by `buffer` (aligned inwards), and
    // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents or
    // validity. A failure (THP disabled) leaves the pages as they were, so the result is ignored.
    unsafe {
        libc::madvise(
            aligned_start as *mut libc::c_void,
            aligned_end - aligned_start,
            libc::MADV_HUGEPAGE,
        );
    }
}

/// A zero-filled vector of `len` elements advised to use huge pages.
pub fn zeroed<T: Clone + Default>(len: usize) -> Vec<T> {
    // `vec![0; n]` comes from calloc: large ones are fresh, untouched zero pages.
    let mut buffer = vec![T::default(); len];
    advise_huge_pages(&mut buffer);
    buffer
}

/// An empty vector with room for `capacity` elements, advised to use huge pages.
pub fn with_capacity<T>(capacity: usize) -> Vec<T> {
    let mut buffer = Vec::with_capacity(capacity);
    advise_huge_pages(&mut buffer);
    buffer
}
