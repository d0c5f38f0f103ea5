//! The allocator on the host, over an arena that stands in for wasm memory: random churn with
//! every block's bytes checked, alignment, steady-state memory, a refusing source.

use std::alloc::Layout;

use super::{Heap, Source, PAGE};

/// Pages of one host allocation, handed out in order; refuses past its capacity.
struct Arena {
    base: *mut u8,
    pages: usize,
    used: usize,
}

impl Arena {
    fn new(pages: usize) -> Arena {
        let layout = Layout::from_size_align(pages * PAGE, PAGE).unwrap();
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null());
        Arena { base, pages, used: 0 }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base, Layout::from_size_align(self.pages * PAGE, PAGE).unwrap()) }
    }
}

impl Source for Arena {
    fn grow(&mut self, pages: usize) -> Option<usize> {
        if self.used + pages > self.pages {
            return None;
        }
        let address = self.base as usize + self.used * PAGE;
        self.used += pages;
        Some(address)
    }
}

/// A deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

struct Live {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

fn random_layout(rng: &mut Lcg) -> Layout {
    let size = match rng.below(100) {
        0..=69 => 1 + rng.below(64),
        70..=94 => 1 + rng.below(4_096),
        95..=98 => 1 + rng.below(70_000),
        _ => 1 + rng.below(300_000),
    } as usize;
    let align = match rng.below(20) {
        0 => 4_096,
        1 => 64,
        2..=9 => 8,
        _ => 1,
    };
    Layout::from_size_align(size, align).unwrap()
}

fn fill(block: &Live) {
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { std::ptr::write_bytes(block.ptr, block.tag, block.layout.size()) }
}

fn check(block: &Live) {
    // SAFETY: as in `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(block.ptr, block.layout.size()) };
    assert!(bytes.iter().all(|&byte| byte == block.tag), "a block was overwritten: {:?}", block.layout);
}

#[test]
fn churn_keeps_every_block_intact_and_aligned() {
    let mut heap = Heap::new(Arena::new(1_024));
    let mut rng = Lcg(7);
    let mut live: Vec<Live> = Vec::new();
    for step in 0..40_000u32 {
        if live.len() < 300 && (live.is_empty() || rng.below(100) < 55) {
            let layout = random_layout(&mut rng);
            // SAFETY: a non-zero layout.
            let ptr = unsafe { heap.alloc(layout) };
            assert!(!ptr.is_null(), "out of memory at step {step} for {layout:?}");
            assert_eq!(ptr as usize % layout.align(), 0, "misaligned {layout:?}");
            let block = Live { ptr, layout, tag: (step % 251) as u8 + 1 };
            fill(&block);
            live.push(block);
        } else {
            let index = rng.below(live.len() as u64) as usize;
            let block = live.swap_remove(index);
            check(&block);
            if rng.below(4) == 0 {
                // Grow or shrink in place or by moving: the contents must follow.
                let new_size = 1 + rng.below(8_000) as usize;
                // SAFETY: `block` came from this heap with this layout.
                let moved = unsafe { heap.realloc(block.ptr, block.layout, new_size) };
                assert!(!moved.is_null());
                let kept = block.layout.size().min(new_size);
                // SAFETY: `moved` holds at least `kept` bytes copied from the old block.
                let bytes = unsafe { std::slice::from_raw_parts(moved, kept) };
                assert!(bytes.iter().all(|&byte| byte == block.tag), "realloc lost the contents");
                let resized = Live { ptr: moved, layout: Layout::from_size_align(new_size, block.layout.align()).unwrap(), tag: block.tag };
                fill(&resized);
                live.push(resized);
            } else {
                // SAFETY: as above.
                unsafe { heap.dealloc(block.ptr, block.layout) };
            }
        }
        if step % 5_000 == 0 {
            live.iter().for_each(check);
        }
    }
    live.iter().for_each(check);
}

#[test]
fn a_repeated_workload_stops_growing_memory_after_its_first_round() {
    let mut heap = Heap::new(Arena::new(1_024));
    let mut used_after = Vec::new();
    for _round in 0..6 {
        // The same sequence each round: what a burst of messages does to the heap.
        let mut rng = Lcg(42);
        let mut live = Vec::new();
        for _ in 0..2_000 {
            let layout = random_layout(&mut rng);
            // SAFETY: a non-zero layout.
            let ptr = unsafe { heap.alloc(layout) };
            assert!(!ptr.is_null());
            live.push((ptr, layout));
            if rng.below(3) == 0 {
                let (ptr, layout) = live.swap_remove(rng.below(live.len() as u64) as usize);
                // SAFETY: allocated above with this layout.
                unsafe { heap.dealloc(ptr, layout) };
            }
        }
        for (ptr, layout) in live {
            // SAFETY: as above.
            unsafe { heap.dealloc(ptr, layout) };
        }
        used_after.push(heap.source.used);
    }
    assert!(used_after.windows(2).all(|pair| pair[0] == pair[1]), "memory kept growing: {used_after:?} pages");
}

#[test]
fn a_refusing_source_gives_null_not_a_panic() {
    let mut heap = Heap::new(Arena::new(2));
    // SAFETY: non-zero layouts.
    unsafe {
        assert!(!heap.alloc(Layout::from_size_align(100_000, 8).unwrap()).is_null(), "two pages hold 128 KiB");
        assert!(heap.alloc(Layout::from_size_align(100_000, 8).unwrap()).is_null(), "no third page");
        assert!(heap.alloc(Layout::from_size_align(1 << 40, 8).unwrap()).is_null(), "beyond the largest class");
        assert!(heap.alloc(Layout::from_size_align(64, PAGE * 2).unwrap()).is_null(), "alignment beyond a page");
    }
}

#[test]
fn a_freed_block_is_reused_by_its_class() {
    let mut heap = Heap::new(Arena::new(4));
    let layout = Layout::from_size_align(24, 8).unwrap();
    // SAFETY: non-zero layouts, freed with the layout they were allocated with.
    unsafe {
        let first = heap.alloc(layout);
        heap.dealloc(first, layout);
        let again = heap.alloc(Layout::from_size_align(32, 8).unwrap());
        assert_eq!(first, again, "a 24-byte and a 32-byte block share the 32-byte class");
    }
}
