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

/// The names of functions that walk a `core::fmt::Arguments` or make a `Formatter`: the only ways
/// into a formatting trait method. A module holding none of them formats nothing.
const FORMATTING_ENTRIES: &[&str] = &[
    "::fmt::write",
    "write_fmt",
    "Formatter>::new",
    "::fmt::format",
];

/// js-sys's JSPI tasks (`js_sys::futures::jspi`): a task is made by `spawn_promising` and polled
/// by the `__wbg_jspi_task_poll` export, whose poll makes the task's waker (`task_waker`); the
/// waker's functions (`task_waker::raw_*`) and the `SpawnedTask::wake` they call are reached only
/// through that waker. js-sys always links the export; wasm-bindgen deletes it from a module
/// without JSPI exports, and with it everything that makes a task, leaving the waker's functions
/// in the table (where wasm-opt keeps them, and `wake`'s `RefCell` borrow with its panic site).
const JSPI_TASK_MAKERS: &[&str] = &[
    "__wbg_jspi_task_poll",
    "js_sys::futures::jspi::spawn_promising",
    "js_sys::futures::jspi::SpawnedTask::poll",
    "js_sys::futures::jspi::SpawnedTask::schedule",
    "js_sys::futures::jspi::task_waker::h",
];
const JSPI_WAKER: &[&str] = &[
    "js_sys::futures::jspi::task_waker::raw_",
    "js_sys::futures::jspi::SpawnedTask::wake::h",
];

/// Whether `name` (a function name as wasm-bindgen writes it, demangled) is a method of a
/// formatting trait: `<T as core::fmt::Display>::fmt`, `...Debug>::fmt`, `...LowerHex>::fmt`, ...
fn is_formatting_method(name: &str) -> bool {
    // Legacy-mangled names end in a hash (`::h0123456789abcdef`); v0 names carry none.
    let name = match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    };
    let Some(head) = name.strip_suffix(">::fmt") else {
        return false;
    };
    let Some((_, path)) = head.rsplit_once(" as ") else {
        return false;
    };
    // `core::fmt::Display`, or with the crate's disambiguator: `core[c5930c85a12de822]::fmt::Display`.
    let Some(rest) = path.strip_prefix("core") else {
        return false;
    };
    let rest = match rest.strip_prefix('[') {
        Some(tail) => match tail.split_once(']') {
            Some((hash, tail)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => tail,
            _ => return false,
        },
        None => rest,
    };
    match rest.strip_prefix("::fmt::") {
        Some(trait_name) => {
            !trait_name.is_empty() && trait_name.bytes().all(|b| b.is_ascii_alphabetic())
        }
        None => false,
    }
}

/// `wasm` with the body of every formatting trait method (`<T as core::fmt::Display>::fmt` and
/// the like, found by the name section) replaced by `unreachable`, and, when nothing in it makes
/// a JSPI task, those of js-sys's JSPI waker (see `JSPI_WAKER`); the name section dropped; with
/// it, the names of the functions replaced. Every other section is copied byte for byte and no
/// index changes, so a table entry that pointed at such a method still points at it.
///
/// Why this is sound: a formatting method is called only with a `Formatter`, and only
/// `core::fmt::write` (behind `write_fmt`, `format`) makes one, walking a `fmt::Arguments`. In a
/// module without those (checked by name: it refuses otherwise), a panic site still stores a
/// method's table index in the `Arguments` it hands to the panic handler, which traps without
/// reading them: nothing can call the method, so wasm-opt cannot see that it, and the formatting
/// machinery it calls (`Formatter::pad`, `pad_integral`), is dead. Should the reasoning ever fail,
/// the call traps: it cannot run on with a wrong result.
///
/// Refuses a module without a name section (the build that made it stripped the names) and one
/// that holds a formatting entry point.
pub fn trap_uncallable(wasm: &[u8]) -> Result<(Vec<u8>, Vec<String>), String> {
    Validator::new()
        .validate_all(wasm)
        .map_err(|e| format!("the input does not validate: {e}"))?;
    let mut function_names: BTreeMap<u32, String> = BTreeMap::new();
    let mut imported_functions = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("cannot parse the input: {e}"))? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| format!("cannot read an import: {e}"))?;
                    if matches!(
                        import.ty,
                        wasmparser::TypeRef::Func(_) | wasmparser::TypeRef::FuncExact(_)
                    ) {
                        imported_functions += 1;
                    }
                }
            }
            Payload::CustomSection(reader) => {
                if let wasmparser::KnownCustom::Name(names) = reader.as_known() {
                    for name in names {
                        if let wasmparser::Name::Function(map) =
                            name.map_err(|e| format!("cannot read the name section: {e}"))?
                        {
                            for naming in map {
                                let naming = naming
                                    .map_err(|e| format!("cannot read a function name: {e}"))?;
                                function_names.insert(naming.index, naming.name.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if function_names.is_empty() {
        return Err("the input has no function names (built with strip = true, through wasm-opt without -g, or already processed?)".into());
    }
    if let Some(name) = function_names
        .values()
        .find(|name| FORMATTING_ENTRIES.iter().any(|entry| name.contains(entry)))
    {
        return Err(format!(
            "the input formats (it holds {name}): its formatting methods may be called"
        ));
    }
    // With no JSPI task maker left, no JSPI waker exists: its functions are dead too.
    let no_jspi_tasks = !function_names
        .values()
        .any(|name| JSPI_TASK_MAKERS.iter().any(|maker| name.starts_with(maker)));
    let targets: BTreeMap<u32, &str> = function_names
        .iter()
        .filter(|(index, name)| {
            **index >= imported_functions
                && (is_formatting_method(name)
                    || (no_jspi_tasks && JSPI_WAKER.iter().any(|waker| name.starts_with(waker))))
        })
        .map(|(index, name)| (*index, name.as_str()))
        .collect();

    let mut out = wasm_encoder::Module::new();
    let mut code: Option<wasm_encoder::CodeSection> = None;
    let mut defined = imported_functions;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("cannot parse the input: {e}"))?;
        if let Payload::CodeSectionEntry(body) = &payload {
            let section = code
                .as_mut()
                .ok_or("a function body outside the code section")?;
            if targets.contains_key(&defined) {
                // No locals, `unreachable`, `end`: valid whatever the function's type.
                section.raw(&[0x00, 0x00, 0x0b]);
            } else {
                section.raw(&wasm[body.range()]);
            }
            defined += 1;
            continue;
        }
        if let Some(section) = code.take() {
            out.section(&section);
        }
        match &payload {
            Payload::Version { encoding, .. } if *encoding != Encoding::Module => {
                return Err("the input is a component, not a core module".into());
            }
            Payload::CodeSectionStart { .. } => code = Some(wasm_encoder::CodeSection::new()),
            Payload::CustomSection(reader) if reader.name() == "name" => {}
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
    if let Some(section) = code.take() {
        out.section(&section);
    }
    let out = out.finish();
    Validator::new()
        .validate_all(&out)
        .map_err(|e| format!("the output does not validate: {e}"))?;
    Ok((out, targets.values().map(|name| name.to_string()).collect()))
}
