//! Placement cost: building a layout (which computes its placement) for
//! 10, 100 and 1,000 members, at the recommended partition count and at
//! 65,536 partitions, plus the lookups a request and a rebalance make.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use slurp_protocol::{Framed, Layout, Member, PartitionScheme};
use std::hint::black_box;

fn members(n: usize, zones: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            id: format!("node-{i:05}"),
            zone: format!("zone-{}", i % zones),
            capacity: [1, 2, 4][i % 3],
            address: format!("/ip4/10.0.{}.{}/tcp/7070", i / 256, i % 256),
        })
        .collect()
}

fn compute(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement_compute");
    group.sample_size(10);
    for n in [10usize, 100, 1000] {
        let recommended = Layout::recommended_partition_bits(n, 3);
        let mut counts = vec![recommended];
        if recommended < 16 {
            counts.push(16);
        }
        for bits in counts {
            let list = members(n, 3);
            let scheme = PartitionScheme::new(bits).unwrap();
            group.bench_with_input(
                BenchmarkId::new(
                    format!("{n}_members"),
                    format!("{}_partitions", 1u32 << bits),
                ),
                &list,
                |b, list| b.iter(|| Layout::new(1, 3, scheme, black_box(list.clone())).unwrap()),
            );
        }
    }
    group.finish();
}

fn queries(c: &mut Criterion) {
    let scheme = PartitionScheme::new(16).unwrap();
    let layout = Layout::new(1, 3, scheme, members(1000, 3)).unwrap();
    let key = "ucxl://claude:developer@shop:checkout/*^/src/auth/refresh.rs";
    c.bench_function("placement_replicas_for_key", |b| {
        b.iter(|| layout.replicas_for_key(black_box(key)).len())
    });
    let partition = layout.partition_of(key);
    c.bench_function("placement_fallbacks_4_of_1000", |b| {
        b.iter(|| layout.fallbacks(black_box(partition), 4))
    });
    let bytes = layout.encode().unwrap();
    let mut group = c.benchmark_group("placement_layout");
    group.sample_size(10);
    group.bench_function("decode_1000_members_65536_partitions", |b| {
        b.iter(|| Layout::decode(black_box(&bytes)).unwrap())
    });
    let mut grown = members(1000, 3);
    grown.push(Member {
        id: "joiner".into(),
        zone: "zone-0".into(),
        capacity: 2,
        address: "/ip4/10.0.9.9/tcp/7070".into(),
    });
    let next = Layout::new(2, 3, scheme, grown).unwrap();
    group.bench_function("diff_1000_members_65536_partitions", |b| {
        b.iter(|| layout.diff(black_box(&next)).moved_replicas())
    });
    group.finish();
}

criterion_group!(group, compute, queries);
criterion_main!(group);
