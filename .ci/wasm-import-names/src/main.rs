//! `wasm-import-names IN.wasm OUT.wasm MODULE NEW_MODULE MAP`: moves the imports of MODULE to
//! NEW_MODULE, renames them by MAP (lines `old new`) and writes OUT.wasm; fails, writing nothing,
//! unless every import of MODULE is in the map exactly once. See lib.rs.
//!
//! `wasm-import-names --trap-uncallable IN.wasm OUT.wasm`: the bodies of functions nothing can
//! call (the formatting trait methods of a module that cannot format, a JSPI waker with no JSPI
//! task) replaced by `unreachable` (see `trap_uncallable`); prints their names, one a line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, input, output] if flag == "--trap-uncallable" => (|| {
            let wasm = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
            let (out, trapped) =
                wasm_import_names::trap_uncallable(&wasm).map_err(|e| format!("{input}: {e}"))?;
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
            eprintln!("       wasm-import-names --trap-uncallable IN.wasm OUT.wasm");
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
