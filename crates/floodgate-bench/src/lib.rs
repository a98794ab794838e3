//! Floodgate's benchmarks live in `benches/` of this crate, apart from the library crates so that their examples
//! and tests do not build the benches' dependencies (criterion, governor). This library is empty.
//!
//! ```text
//! cargo bench -p floodgate-bench --bench memory          # criterion: the memory store beside governor
//! cargo bench -p floodgate-bench --bench floor           # interleaved rounds: 1 M keys, floodgate beside governor
//! cargo bench -p floodgate-bench --bench bytes_per_key   # resident memory per key at one million keys
//! cargo bench -p floodgate-bench --bench http_layer      # criterion: the tower layer per request
//! cargo bench -p floodgate-bench --bench http_instructions
//! ```
//!
//! Figures, ratios and how to read them: `BENCHMARKS.md` at the repository's root.
