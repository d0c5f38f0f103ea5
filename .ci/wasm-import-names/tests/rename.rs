use std::collections::BTreeMap;

use wasm_encoder::{
    CodeSection, CustomSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    ImportSection, Instruction, MemoryType, Module, TypeSection, ValType,
};
use wasm_import_names::{parse_map, rename_imports};
use wasmparser::{Parser, Payload};

const WBG: &str = "./realtime_client_bg.js";

/// A module shaped like wasm-bindgen's: function imports from WBG, one import of another module,
/// a function calling two imports, an export and a custom section.
fn module(imports: &[(&str, &str)]) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut section = ImportSection::new();
    for (module, name) in imports {
        section.import(module, name, EntityType::Function(0));
    }
    section.import(
        "env",
        "memory",
        MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        },
    );
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, imports.len() as u32);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::LocalGet(0));
    body.instruction(&Instruction::Call(0));
    body.instruction(&Instruction::Call(imports.len() as u32 - 1));
    body.instruction(&Instruction::End);
    code.function(&body);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&section)
        .section(&functions)
        .section(&exports)
        .section(&code)
        .section(&CustomSection {
            name: "producers".into(),
            data: b"\x00".as_slice().into(),
        });
    module.finish()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(old, new)| (old.to_string(), new.to_string()))
        .collect()
}

fn imports(wasm: &[u8]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::ImportSection(reader) = payload.unwrap() {
            for import in reader.into_imports() {
                let import = import.unwrap();
                found.push((import.module.to_string(), import.name.to_string()));
            }
        }
    }
    found
}

/// Every section but the import section, as (id, bytes).
fn other_sections(wasm: &[u8]) -> Vec<(u8, Vec<u8>)> {
    Parser::new(0)
        .parse_all(wasm)
        .filter_map(|payload| payload.unwrap().as_section())
        .filter(|(id, _)| *id != 2)
        .map(|(id, range)| (id, wasm[range].to_vec()))
        .collect()
}

#[test]
fn renames_the_module_imports_in_order_and_copies_everything_else() {
    let input = module(&[
        (WBG, "__wbg_addEventListener_0123456789abcdef"),
        (WBG, "__wbindgen_throw"),
    ]);
    let output = rename_imports(
        &input,
        WBG,
        "w",
        &map(&[
            ("__wbg_addEventListener_0123456789abcdef", "a"),
            ("__wbindgen_throw", "b"),
        ]),
    )
    .unwrap();
    assert_eq!(
        imports(&output),
        [
            ("w".to_string(), "a".to_string()),
            ("w".to_string(), "b".to_string()),
            ("env".to_string(), "memory".to_string())
        ]
    );
    assert_eq!(other_sections(&output), other_sections(&input));
    assert!(output.len() < input.len());
}

#[test]
fn refuses_an_import_without_a_new_name() {
    let input = module(&[(WBG, "__wbg_a_1"), (WBG, "__wbg_b_2")]);
    let error = rename_imports(&input, WBG, "w", &map(&[("__wbg_a_1", "a")])).unwrap_err();
    assert!(
        error.contains("__wbg_b_2") && error.contains("no new name"),
        "{error}"
    );
}

#[test]
fn refuses_an_entry_that_matches_no_import() {
    let input = module(&[(WBG, "__wbg_a_1")]);
    let error = rename_imports(
        &input,
        WBG,
        "w",
        &map(&[("__wbg_a_1", "a"), ("__wbg_gone_3", "b")]),
    )
    .unwrap_err();
    assert!(error.contains("__wbg_gone_3"), "{error}");
}

#[test]
fn refuses_an_import_that_occurs_twice() {
    let input = module(&[(WBG, "__wbg_a_1"), (WBG, "__wbg_a_1")]);
    let error = rename_imports(&input, WBG, "w", &map(&[("__wbg_a_1", "a")])).unwrap_err();
    assert!(error.contains("twice"), "{error}");
}

#[test]
fn refuses_colliding_or_empty_new_names() {
    let input = module(&[(WBG, "__wbg_a_1"), (WBG, "__wbg_b_2")]);
    let error = rename_imports(
        &input,
        WBG,
        "w",
        &map(&[("__wbg_a_1", "a"), ("__wbg_b_2", "a")]),
    )
    .unwrap_err();
    assert!(error.contains("same new name"), "{error}");
    let error = rename_imports(
        &input,
        WBG,
        "w",
        &map(&[("__wbg_a_1", ""), ("__wbg_b_2", "b")]),
    )
    .unwrap_err();
    assert!(error.contains("empty"), "{error}");
}

#[test]
fn refuses_a_new_module_name_that_is_taken_or_empty() {
    let input = module(&[(WBG, "__wbg_a_1")]);
    let error = rename_imports(&input, WBG, "env", &map(&[("__wbg_a_1", "a")])).unwrap_err();
    assert!(error.contains("already imported"), "{error}");
    let error = rename_imports(&input, WBG, "", &map(&[("__wbg_a_1", "a")])).unwrap_err();
    assert!(error.contains("module name is empty"), "{error}");
}

#[test]
fn refuses_input_that_is_not_valid_wasm() {
    let error = rename_imports(b"\0asm\x01\0\0\0\x02", WBG, "w", &map(&[])).unwrap_err();
    assert!(error.contains("does not validate"), "{error}");
}

#[test]
fn parses_a_map_file() {
    assert_eq!(
        parse_map("__wbg_a_1 a\n\n__wbg_b_2\tb\n").unwrap(),
        map(&[("__wbg_a_1", "a"), ("__wbg_b_2", "b")])
    );
    assert!(parse_map("__wbg_a_1 a\n__wbg_a_1 b\n")
        .unwrap_err()
        .contains("twice"));
    assert!(parse_map("__wbg_a_1 a b\n").unwrap_err().contains("line 1"));
}
