//! Writes the seed inputs of every fuzz target into `fuzz/corpus/NAME/seed-N` (overwriting
//! earlier seeds of the same name, leaving inputs found by fuzzing alone):
//! `cargo run -p kinbridge-fuzzing --example seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, seeds) in kinbridge_fuzzing::seeds::all() {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
