use criterion::{Criterion, criterion_group, criterion_main};
use slurp_protocol::{ContextNode, Framed, RoleName, RoleSet, UcxlAddress};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let s = "ucxl://claude:architect@bzzz:v2-migration/*^/src/main.go";
    c.bench_function("address_parse", |b| {
        b.iter(|| UcxlAddress::parse(black_box(s)).unwrap())
    });
    let mut n = ContextNode::new(
        UcxlAddress::parse(s).unwrap(),
        "x".repeat(600),
        vec![RoleName::new("developer").unwrap()],
    );
    n.tags = vec!["auth".into(), "backend".into()];
    let bytes = n.encode().unwrap();
    c.bench_function("context_encode", |b| {
        b.iter(|| black_box(&n).encode().unwrap())
    });
    c.bench_function("context_decode", |b| {
        b.iter(|| ContextNode::decode(black_box(&bytes)).unwrap())
    });
    let roles = RoleSet::default();
    let dev = vec![RoleName::new("developer").unwrap()];
    c.bench_function("reader_closure", |b| {
        b.iter(|| roles.reader_closure(black_box(&dev)).unwrap())
    });
}

criterion_group!(group, benches);
criterion_main!(group);
