//! Loading the federation's linkage keys for family tracing from the files the config names.

use kinbridge_linkage::LinkageKey;
use kinbridge_service::family_tracing::HeldKey;

use crate::config::LinkageKeyConfig;
use crate::devpki::DEV_LINKAGE_MARKER;

/// Loads the linkage keys `config` names: each file holds 32 bytes in hexadecimal (lines
/// starting with `#` are comments). A development key is refused unless the node is a
/// development node.
pub fn load_keys(
    keys: &[LinkageKeyConfig],
    development: bool,
) -> Result<Vec<HeldKey>, (std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for k in keys {
        let err = |reason: String| (k.file.clone(), reason);
        let text = std::fs::read_to_string(&k.file).map_err(|e| err(e.to_string()))?;
        if text.contains(DEV_LINKAGE_MARKER) && !development {
            return Err(err(
                "a development linkage key, refused by a node that is not a development node"
                    .into(),
            ));
        }
        let hex_text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&hex_text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                err("a linkage key is 32 bytes written as 64 hexadecimal digits".into())
            })?;
        out.push(HeldKey {
            key: LinkageKey::new(bytes, k.epoch),
            queries_from: k.queries_from,
        });
    }
    Ok(out)
}
