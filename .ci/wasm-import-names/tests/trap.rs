use wasm_encoder::{
    CodeSection, ConstExpr, ElementSection, Elements, ExportKind, ExportSection, Function,
    FunctionSection, IndirectNameMap, Instruction, Module, NameMap, NameSection, RefType,
    TableSection, TableType, TypeSection, ValType,
};
use wasm_import_names::trap_uncallable;
use wasmparser::{Parser, Payload};

/// Three functions of type (i32, i32) -> i32, named by `names`, all in a table, the first exported.
fn module(names: &[&str]) -> Vec<u8> {
    let mut types = TypeSection::new();
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut name_map = NameMap::new();
    for (index, name) in names.iter().enumerate() {
        functions.function(0);
        let mut body = Function::new([(1, ValType::I32)]);
        body.instruction(&Instruction::LocalGet(0));
        body.instruction(&Instruction::LocalGet(1));
        body.instruction(&Instruction::I32Add);
        body.instruction(&Instruction::End);
        code.function(&body);
        name_map.append(index as u32, name);
    }
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        minimum: names.len() as u64,
        maximum: None,
        table64: false,
        shared: false,
    });
    let mut elements = ElementSection::new();
    let indices: Vec<u32> = (0..names.len() as u32).collect();
    elements.active(
        Some(0),
        &ConstExpr::i32_const(0),
        Elements::Functions(indices.into()),
    );
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    let mut name_section = NameSection::new();
    name_section.functions(&name_map);
    name_section.locals(&IndirectNameMap::new());
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&tables)
        .section(&exports)
        .section(&elements)
        .section(&code)
        .section(&name_section);
    module.finish()
}

fn bodies(wasm: &[u8]) -> Vec<Vec<u8>> {
    Parser::new(0)
        .parse_all(wasm)
        .filter_map(|payload| match payload.unwrap() {
            Payload::CodeSectionEntry(body) => Some(wasm[body.range()].to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn traps_the_formatting_methods_only() {
    let names = [
        "run",
        "<u32 as core[c5930c85a12de822]::fmt::Display>::fmt",
        "<my::Error as core::fmt::Debug>::fmt::h0123456789abcdef",
    ];
    let input = module(&names);
    let (out, trapped) = trap_uncallable(&input).unwrap();
    assert_eq!(trapped, names[1..]);
    let (before, after) = (bodies(&input), bodies(&out));
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1], [0x00, 0x00, 0x0b]);
    assert_eq!(after[2], [0x00, 0x00, 0x0b]);
    // The name section is gone (its local names would describe the old bodies).
    assert!(!Parser::new(0)
        .parse_all(&out)
        .any(|payload| matches!(payload.unwrap(), Payload::CustomSection(_))));
}

#[test]
fn leaves_other_functions_named_fmt() {
    for name in [
        "<core::fmt::Formatter>::pad",
        "<T as my::fmt::Display>::fmt",
        "my::fmt",
        "<T as core::fmt::Display>::fmt_extra",
    ] {
        let (_, trapped) = trap_uncallable(&module(&["run", name])).unwrap();
        assert!(trapped.is_empty(), "{name} trapped");
    }
}

#[test]
fn refuses_a_module_that_formats_or_has_no_names() {
    for name in [
        "core::fmt::write",
        "<alloc::string::String as core::fmt::Write>::write_fmt",
        "alloc::fmt::format::format_inner",
    ] {
        let error = trap_uncallable(&module(&["run", "<u32 as core::fmt::Display>::fmt", name]))
            .unwrap_err();
        assert!(error.contains("formats"), "{name}: {error}");
    }
    let unnamed = Module::new().finish();
    let error = trap_uncallable(&unnamed).unwrap_err();
    assert!(error.contains("no function names"), "{error}");
}

#[test]
fn traps_the_jspi_waker_only_without_a_task_maker() {
    let waker = "js_sys::futures::jspi::task_waker::raw_wake::hd432df7bdc6198a5";
    let wake = "js_sys::futures::jspi::SpawnedTask::wake::hc3e7c18960f912dc";
    let (_, trapped) = trap_uncallable(&module(&["run", waker, wake])).unwrap();
    assert_eq!(trapped, [waker, wake]);
    for maker in [
        "__wbg_jspi_task_poll",
        "js_sys::futures::jspi::spawn_promising::h0123456789abcdef",
        "js_sys::futures::jspi::task_waker::h0123456789abcdef",
    ] {
        let (_, trapped) = trap_uncallable(&module(&["run", waker, maker])).unwrap();
        assert!(trapped.is_empty(), "trapped beside {maker}");
    }
}
