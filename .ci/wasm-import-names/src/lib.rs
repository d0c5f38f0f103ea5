//! Renames the imports of one import module of a core wasm module (the module name, and each
//! import's name by an explicit map), and copies
//! every other section byte for byte (`wasmparser` reads the sections, `wasm-encoder` writes the
//! new import section). Used by `.ci/post-build.mjs` to give wasm-bindgen's imports short names.
//!
//! It refuses rather than guess: every import of the module must have an entry in the map, every
//! entry must match exactly one import, the new names must be unique and non-empty, and the input
//! and the output must both validate.

use std::collections::{BTreeMap, BTreeSet};

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{Encoding, Parser, Payload, Validator};

/// `wasm` with the imports of `module` moved to `new_module` and renamed by `renames` (old name ->
/// new name). Imports of other modules are kept as they are.
pub fn rename_imports(
    wasm: &[u8],
    module: &str,
    new_module: &str,
    renames: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
    Validator::new()
        .validate_all(wasm)
        .map_err(|e| format!("the input does not validate: {e}"))?;
    let new_names: BTreeSet<&str> = renames.values().map(String::as_str).collect();
    if new_names.len() != renames.len() {
        return Err("two imports would get the same new name".into());
    }
    if new_names.contains("") {
        return Err("a new name is empty".into());
    }
    if new_module.is_empty() {
        return Err("the new module name is empty".into());
    }

    let mut out = wasm_encoder::Module::new();
    let mut import_sections = 0;
    let mut renamed = BTreeSet::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("cannot parse the input: {e}"))?;
        match &payload {
            Payload::Version { encoding, .. } if *encoding != Encoding::Module => {
                return Err("the input is a component, not a core module".into());
            }
            Payload::ImportSection(reader) => {
                import_sections += 1;
                let mut section = wasm_encoder::ImportSection::new();
                for import in reader.clone().into_imports() {
                    let import = import.map_err(|e| format!("cannot read an import: {e}"))?;
                    let ty = RoundtripReencoder.entity_type(import.ty).map_err(|e| {
                        format!("cannot re-encode the type of {}: {e}", import.name)
                    })?;
                    let (import_module, name) = if import.module == module {
                        let new = renames.get(import.name).ok_or_else(|| {
                            format!(
                                "import \"{}\" \"{}\" has no new name",
                                import.module, import.name
                            )
                        })?;
                        if !renamed.insert(import.name) {
                            return Err(format!(
                                "import \"{module}\" \"{}\" occurs twice",
                                import.name
                            ));
                        }
                        (new_module, new.as_str())
                    } else if import.module == new_module {
                        return Err(format!(
                            "the new module name {new_module} is already imported from"
                        ));
                    } else {
                        (import.module, import.name)
                    };
                    section.import(import_module, name, ty);
                }
                out.section(&section);
            }
            _ => {
                if let Some((id, range)) = payload.as_section() {
                    out.section(&wasm_encoder::RawSection {
                        id,
                        data: &wasm[range],
                    });
                }
            }
        }
    }
    if import_sections != 1 {
        return Err(format!(
            "expected one import section, found {import_sections}"
        ));
    }
    if let Some(unused) = renames.keys().find(|old| !renamed.contains(old.as_str())) {
        return Err(format!("no import \"{module}\" \"{unused}\" to rename"));
    }
    let out = out.finish();
    Validator::new()
        .validate_all(&out)
        .map_err(|e| format!("the output does not validate: {e}"))?;
    Ok(out)
}

/// Parses a map file: one `old new` pair per line, separated by whitespace.
pub fn parse_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            [old, new] => {
                if map.insert(old.to_string(), new.to_string()).is_some() {
                    return Err(format!("line {}: {old} is mapped twice", index + 1));
                }
            }
            _ => {
                return Err(format!(
                    "line {}: expected `old new`, got {line:?}",
                    index + 1
                ))
            }
        }
    }
    Ok(map)
}
