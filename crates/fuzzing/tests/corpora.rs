//! Replays every committed fuzz input through its target on the stable toolchain: the seed
//! corpora `fuzz/corpus/NAME/` and the crashes once found and fixed `fuzz/regressions/NAME/`.
//! Fails if a target has no corpus or an empty one, or if a directory names no target.

use std::path::{Path, PathBuf};

use kinbridge_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8]), file: &Path) {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let outcome = std::panic::catch_unwind(|| run(&data));
    assert!(
        outcome.is_ok(),
        "target {target} fails on {} (reproduce: cargo fuzz run {target} {})",
        file.display(),
        file.display()
    );
}

#[test]
fn every_target_has_a_corpus_and_passes_it() {
    for (target, run) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let corpus = files(&dir);
        assert!(
            !corpus.is_empty(),
            "target {target} has no corpus in {} (cargo run -p kinbridge-fuzzing --example seeds)",
            dir.display()
        );
        for file in &corpus {
            replay(target, *run, file);
        }
    }
}

#[test]
fn every_regression_input_passes() {
    for (target, run) in TARGETS {
        for file in files(&fuzz_dir().join("regressions").join(target)) {
            replay(target, *run, &file);
        }
    }
}

#[test]
fn every_directory_names_a_target_and_every_target_a_fuzz_binary() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} names no target of kinbridge_fuzzing::TARGETS"
            );
        }
    }
    for (target, _) in TARGETS {
        let binary = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(
            binary.is_file(),
            "target {target} has no {}",
            binary.display()
        );
    }
}

#[test]
fn seeds_pass_their_targets() {
    for (target, seeds) in kinbridge_fuzzing::seeds::all() {
        let (_, run) = TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("seeds for an unknown target {target}"));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in &seeds {
            run(seed);
        }
    }
}

/// The seeds start the fuzzer deep: the valid inputs they are made from are accepted by the
/// real decoders, so a mutation reaches the checks after the first decode.
#[test]
fn valid_inputs_behind_the_seeds_are_accepted() {
    use kinbridge_fuzzing::fixture::{
        NOW, keyring, policy, receiver, receiver_key, sender, sender_key, valid_envelope,
    };
    let keys = keyring(&sender_key());
    let verified =
        kinbridge_core::verify_envelope(valid_envelope(), &sender(), Some(&keys), &policy(), NOW);
    assert!(verified.is_ok(), "fixture envelope refused: {verified:?}");

    let receipt = kinbridge_fuzzing::receipt::sign(kinbridge_fuzzing::receipt::valid_body());
    let message_id =
        kinbridge_core::MessageId::new(kinbridge_fuzzing::fixture::MESSAGE_ID).expect("message id");
    let checked = kinbridge_core::verify_receipt(
        &receipt,
        &sender(),
        message_id,
        valid_envelope().digest(),
        &receiver(),
        &keyring(&receiver_key()),
    );
    assert!(checked.is_ok(), "fixture receipt refused: {checked:?}");

    let entry = kinbridge_fuzzing::export::valid_entry();
    let file = kinbridge_fuzzing::export::export_of(&[entry.clone(), entry]);
    let key = kinbridge_fuzzing::checkpoint::note_key(&sender_key());
    let export = kinbridge_audit::export::verify_export(file.as_slice(), &[key], false);
    assert!(export.is_ok(), "fixture export refused: {export:?}");

    for text in kinbridge_fuzzing::config::EXAMPLES {
        let dir = tempfile::tempdir().expect("temp dir");
        let parsed = kinbridge_node::NodeConfig::parse(&dir.path().join("x.toml"), text);
        // The files the examples name do not exist here: a refusal must be about a file.
        if let Err(e) = parsed {
            assert!(
                e.expected.contains("an existing file"),
                "example config refused: {e}"
            );
        }
    }
}
