//! `wasm-import-names IN.wasm OUT.wasm MODULE NEW_MODULE MAP`: moves the imports of MODULE to
//! NEW_MODULE, renames them by MAP (lines `old new`) and writes OUT.wasm; fails, writing nothing,
//! unless every import of MODULE is in the map exactly once. See lib.rs.
//!
//! `wasm-import-names --trap-formatting IN.wasm OUT.wasm`: the formatting trait methods' bodies
//! replaced by `unreachable` in a module that cannot format (see `trap_formatting_methods`);
//! prints the names of the methods replaced, one a line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, input, output] if flag == "--trap-formatting" => (|| {
            let wasm = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
            let (out, trapped) = wasm_import_names::trap_formatting_methods(&wasm)
                .map_err(|e| format!("{input}: {e}"))?;
            std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))?;
            for name in trapped {
                println!("{name}");
            }
            Ok(())
        })(),
        [input, output, module, new_module, map] => (|| {
            let wasm = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
            let map_text = std::fs::read_to_string(map).map_err(|e| format!("{map}: {e}"))?;
            let renames =
                wasm_import_names::parse_map(&map_text).map_err(|e| format!("{map}: {e}"))?;
            let out = wasm_import_names::rename_imports(&wasm, module, new_module, &renames)
                .map_err(|e| format!("{input}: {e}"))?;
            std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))
        })(),
        _ => {
            eprintln!("usage: wasm-import-names IN.wasm OUT.wasm MODULE NEW_MODULE MAP");
            eprintln!("       wasm-import-names --trap-formatting IN.wasm OUT.wasm");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wasm-import-names: {message}");
            ExitCode::FAILURE
        }
    }
}
