//! The tree against the RFC 6962 test vectors published with Certificate Transparency
//! (transparency-dev/merkle `testonly`), and against a direct transcription of the RFC's
//! recursive definitions over every size, index and pair of sizes up to 40.

use super::*;

fn h(s: &str) -> Hash {
    let v = hex::decode(s).expect("hex");
    <[u8; 32]>::try_from(v.as_slice()).expect("32 bytes")
}

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn vector_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in LEAVES {
        tree.push(leaf_hash(&hex::decode(leaf).expect("hex")));
    }
    tree
}

#[test]
fn roots_match_the_published_vectors() {
    let tree = vector_tree();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(
            tree.root(size as u64).expect("root"),
            h(root),
            "size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let tree = vector_tree();
    let cases: [(u64, u64, &[&str]); 2] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, size, expected) in cases {
        let proof = tree.inclusion_proof(index, size).expect("proof");
        assert_eq!(proof, expected.iter().map(|s| h(s)).collect::<Vec<_>>());
        let leaf = tree.leaf(index).expect("leaf");
        verify_inclusion(&leaf, index, size, &proof, &h(ROOTS[size as usize])).expect("verifies");
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let tree = vector_tree();
    let cases: [(u64, u64, &[&str]); 3] = [
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (first, second, expected) in cases {
        let proof = tree.consistency_proof(first, second).expect("proof");
        assert_eq!(
            proof,
            expected.iter().map(|s| h(s)).collect::<Vec<_>>(),
            "{first}->{second}"
        );
        verify_consistency(
            first,
            second,
            &proof,
            &h(ROOTS[first as usize]),
            &h(ROOTS[second as usize]),
        )
        .expect("verifies");
    }
}

// A direct transcription of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 over a slice of leaves.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

fn spec_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = split(n as u64) as usize;
    if m < k {
        let mut p = spec_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = spec_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn spec_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = split(n as u64) as usize;
    if m <= k {
        let mut p = spec_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = spec_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

#[test]
fn agrees_with_the_rfc_definitions_and_rejects_tampering() {
    let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut tree = MerkleTree::new();
    for (n, leaf) in leaves.iter().enumerate() {
        tree.push(*leaf);
        let size = n + 1;
        let root = mth(&leaves[..size]);
        assert_eq!(tree.root(size as u64).expect("root"), root);
        for m in 0..size {
            let proof = tree.inclusion_proof(m as u64, size as u64).expect("proof");
            assert_eq!(proof, spec_path(m, &leaves[..size]));
            verify_inclusion(&leaves[m], m as u64, size as u64, &proof, &root).expect("verifies");
            if size > 1 {
                let wrong = (m + 1) % size;
                assert!(
                    verify_inclusion(&leaves[wrong], m as u64, size as u64, &proof, &root).is_err()
                );
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                assert!(verify_inclusion(&leaves[m], m as u64, size as u64, &bad, &root).is_err());
                assert!(
                    verify_inclusion(&leaves[m], m as u64, size as u64, &proof[1..], &root)
                        .is_err()
                );
            }
        }
        for first in 1..=size {
            let proof = tree
                .consistency_proof(first as u64, size as u64)
                .expect("proof");
            if first < size {
                assert_eq!(proof, spec_subproof(first, &leaves[..size], true));
            }
            let first_root = mth(&leaves[..first]);
            verify_consistency(first as u64, size as u64, &proof, &first_root, &root)
                .expect("verifies");
            if first < size {
                let mut forked = first_root;
                forked[0] ^= 1;
                assert!(
                    verify_consistency(first as u64, size as u64, &proof, &forked, &root).is_err()
                );
                let mut bad = proof.clone();
                let last = bad.len() - 1;
                bad[last][31] ^= 1;
                assert!(
                    verify_consistency(first as u64, size as u64, &bad, &first_root, &root)
                        .is_err()
                );
            }
        }
    }
}

#[test]
fn split_is_the_largest_power_of_two_below() {
    for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
        assert_eq!(split(n), k);
    }
}
