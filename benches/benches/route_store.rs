//! Route store: insert and query at 10k and 1M destinations, and bytes of memory per stored route.
//!
//! The store is filled to its cap (`max_routes` = destinations), so every insert of a new
//! destination also evicts the least recently used one: the steady state of a busy node. Memory is
//! measured with a counting allocator: bytes live after filling, divided by routes stored.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{BenchmarkId, Criterion};
use routefabric_core::plugin::NextHop;
use routefabric_core::{NodeId, RouteStore, RouteStoreConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Spread ids over the whole space, as public keys are.
fn dest(i: u64) -> NodeId {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    NodeId::from_words([x, x.rotate_left(17), x.rotate_left(31), i])
}

fn hop(i: u64) -> NextHop {
    NextHop {
        via: NodeId::from_index(2 + i % 8),
        cost: 1_000 + (i % 97) as u32,
        ttl_ms: 600_000,
        confidence: 0.8,
    }
}

fn filled(n: u64) -> (RouteStore, routefabric_core::route_store::SourceId) {
    let mut store = RouteStore::new(
        NodeId::from_index(1),
        RouteStoreConfig {
            max_routes: n as usize,
            ..RouteStoreConfig::default()
        },
    );
    let source = store.source("bench");
    for i in 0..n {
        store.offer(0, source, dest(i), &[hop(i)], |_| true);
    }
    (store, source)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut memory = Vec::new();
    for (label, n) in [("10k", 10_000u64), ("1M", 1_000_000u64)] {
        let before = LIVE.load(Ordering::Relaxed);
        let (mut store, source) = filled(n);
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        memory.push((label, bytes as f64 / store.len() as f64, bytes));

        let mut group = c.benchmark_group("route_store");
        let mut next = n;
        group.bench_function(BenchmarkId::new("insert-new-destination", label), |b| {
            b.iter(|| {
                next += 1;
                black_box(store.offer(1, source, dest(next), &[hop(next)], |_| true))
            })
        });
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("refresh-existing", label), |b| {
            b.iter(|| {
                i += 1;
                let d = next - (i % (n / 2));
                black_box(store.offer(2, source, dest(d), &[hop(d)], |_| true))
            })
        });
        let mut j = 0u64;
        group.bench_function(BenchmarkId::new("query", label), |b| {
            b.iter(|| {
                j += 1;
                let d = next - (j % (n / 2));
                black_box(store.query(3, &dest(d)).len())
            })
        });
        group.finish();
    }
    c.final_summary();
    println!("\nmemory (live heap bytes after filling, per stored route)");
    for (label, per_route, total) in memory {
        println!(
            "{label:>4} destinations, 1 route each: {per_route:.0} B/route ({:.1} MiB in all)",
            total as f64 / (1 << 20) as f64
        );
    }
}
