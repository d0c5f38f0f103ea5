//! The wasm's global allocator: power-of-two size classes, one free list each, carved from
//! memory the module grows. About 1.5 KB gzipped smaller than a general-purpose allocator
//! (measured with `make package` against talc), and O(1) for every call.
//!
//! A block of class `c` is `16 << c` bytes and aligned to its size (up to 64 KiB, the wasm page),
//! so any layout whose alignment is at most its rounded size fits. Free blocks go back to their
//! class's list and serve only that class: memory is never returned (wasm memory cannot shrink
//! anyway) and never coalesced. What that costs is bounded: a repeated workload stops growing
//! memory after its first round (the churn test below), and the peak is at most twice each
//! class's peak live bytes, summed over the classes.
//!
//! Invariants: every address on a free list is a block of exactly that list's class, aligned to
//! `min(class size, PAGE)`, inside memory the [`Source`] handed out and not in use; `next..end`
//! is unused memory from the source; `next` is a multiple of 16.

use core::alloc::Layout;

/// A wasm page: the unit memory grows by.
pub const PAGE: usize = 64 * 1024;
/// The smallest block: room for the free-list link and 16-byte alignment.
const MIN_BLOCK: usize = 16;
/// Classes 16 B, 32 B, ... 2 GiB.
const CLASSES: usize = 28;

/// Where fresh memory comes from.
pub trait Source {
    /// Adds `pages` pages; returns the address of the first new byte, or `None` when refused.
    /// The memory handed out must be writable, unused by anyone else, and page-aligned.
    fn grow(&mut self, pages: usize) -> Option<usize>;
}

/// The allocator's state; [`Heap::alloc`] and [`Heap::dealloc`] have `GlobalAlloc`'s contracts.
pub struct Heap<S> {
    /// Head of each class's free list (0: empty); each free block starts with the next address.
    free: [usize; CLASSES],
    next: usize,
    end: usize,
    source: S,
}

/// The class that serves `layout`, if any: its index and block size.
fn class_of(layout: Layout) -> Option<(usize, usize)> {
    let needed = layout.size().max(layout.align()).max(MIN_BLOCK);
    if layout.align() > PAGE {
        return None;
    }
    let size = needed.checked_next_power_of_two()?;
    let class = (size.trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize;
    (class < CLASSES).then_some((class, size))
}

impl<S: Source> Heap<S> {
    pub const fn new(source: S) -> Heap<S> {
        Heap { free: [0; CLASSES], next: 0, end: 0, source }
    }

    /// # Safety
    /// `GlobalAlloc::alloc`'s contract; the source must keep its promise.
    pub unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let Some((class, size)) = class_of(layout) else { return core::ptr::null_mut() };
        // `get_mut`, not indexing: `class_of` bounds it, but a bounds check would be a panic site.
        let Some(head) = self.free.get_mut(class) else { return core::ptr::null_mut() };
        if *head != 0 {
            let block = *head;
            // SAFETY: `block` is a free block of this class (invariant), at least 16 bytes and
            // 16-aligned, whose first word holds the next free block's address.
            *head = unsafe { *(block as *const usize) };
            return block as *mut u8;
        }
        let align = size.min(PAGE);
        loop {
            // Checked arithmetic throughout: on wasm32 the last page ends at 2^32, one past `usize`.
            let start = self.next.checked_add(align - 1).map(|next| next & !(align - 1));
            if let Some(start) = start.filter(|&start| start <= self.end && self.end - start >= size) {
                // The gap left by alignment is not lost: it becomes smaller free blocks.
                // SAFETY: `next..start` is unused source memory.
                unsafe { self.release(self.next, start) };
                self.next = start + size;
                return start as *mut u8;
            }
            let pages = size.div_ceil(PAGE);
            let Some(base) = self.source.grow(pages) else { return core::ptr::null_mut() };
            let Some(end) = base.checked_add(pages * PAGE) else { return core::ptr::null_mut() };
            if base != self.end {
                // Not contiguous with what we had: the old tail becomes free blocks.
                // SAFETY: `next..end` is unused source memory.
                unsafe { self.release(self.next, self.end) };
                self.next = base;
            }
            self.end = end;
        }
    }

    /// # Safety
    /// `GlobalAlloc::dealloc`'s contract: `ptr` came from [`Heap::alloc`] with this `layout`.
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        if let Some((class, _)) = class_of(layout) {
            // SAFETY: the block is ours again, at least 16 bytes and 16-aligned.
            unsafe { self.push(class, ptr as usize) };
        }
    }

    /// # Safety
    /// `GlobalAlloc::realloc`'s contract.
    pub unsafe fn realloc(&mut self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else { return core::ptr::null_mut() };
        if class_of(new_layout).is_some_and(|(class, _)| class_of(layout).is_some_and(|(old, _)| old == class)) {
            return ptr; // Same block size: it already fits.
        }
        // SAFETY: `GlobalAlloc::realloc`'s contract, as the default implementation does it.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }

    /// # Safety
    /// `block` is unused memory of class `class`'s size and alignment.
    unsafe fn push(&mut self, class: usize, block: usize) {
        let Some(head) = self.free.get_mut(class) else { return };
        // SAFETY: the caller's promise; the block is 16-aligned and holds a word.
        unsafe { *(block as *mut usize) = *head };
        *head = block;
    }

    /// Puts unused memory `start..end` (both multiples of 16) on the free lists as the largest
    /// naturally aligned blocks that tile it.
    ///
    /// # Safety
    /// `start..end` is unused memory from the source.
    unsafe fn release(&mut self, mut start: usize, end: usize) {
        while start < end {
            let aligned = if start == 0 { PAGE } else { 1 << start.trailing_zeros() };
            let mut size = aligned.min(PAGE);
            while size > end - start {
                size /= 2;
            }
            if size < MIN_BLOCK {
                return;
            }
            let class = (size.trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize;
            // SAFETY: `start..start + size` is unused, aligned to `size`, inside the range.
            unsafe { self.push(class, start) };
            start += size;
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    use super::{Heap, Source, PAGE};

    // The `Sync` below relies on there being one thread.
    #[cfg(target_feature = "atomics")]
    compile_error!("the allocator assumes single-threaded wasm (no atomics)");

    /// Memory 0 of the module, which only this allocator grows.
    pub struct Memory;

    impl Source for Memory {
        fn grow(&mut self, pages: usize) -> Option<usize> {
            let previous = core::arch::wasm32::memory_grow(0, pages);
            (previous != usize::MAX).then(|| previous * PAGE)
        }
    }

    pub struct Global(UnsafeCell<Heap<Memory>>);

    // SAFETY: wasm32 without the atomics feature runs one thread (the compile_error above), and
    // no method of `Heap` calls back into the allocator, so no two borrows of the cell overlap.
    unsafe impl Sync for Global {}

    impl Global {
        pub const fn new() -> Global {
            Global(UnsafeCell::new(Heap::new(Memory)))
        }
    }

    // SAFETY: `Heap` upholds the contracts given a source that does (memory.grow does: new
    // pages are zeroed, page-aligned and ours), and the cell is never borrowed twice (above).
    unsafe impl GlobalAlloc for Global {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { (*self.0.get()).alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { (*self.0.get()).dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe { (*self.0.get()).realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::Global;

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests;
