//! Benchmarks of the relay hot path live in `benches/`; this crate has no code of its own yet.
