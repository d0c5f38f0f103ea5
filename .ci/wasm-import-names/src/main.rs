//! `wasm-import-names IN.wasm OUT.wasm MODULE NEW_MODULE MAP`: moves the imports of MODULE to
//! NEW_MODULE, renames them by MAP (lines `old new`) and writes OUT.wasm; fails, writing nothing,
//! unless every import of MODULE is in the map exactly once. See lib.rs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, module, new_module, map] = args.as_slice() else {
        eprintln!("usage: wasm-import-names IN.wasm OUT.wasm MODULE NEW_MODULE MAP");
        return ExitCode::from(2);
    };
    let result = (|| {
        let wasm = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
        let map_text = std::fs::read_to_string(map).map_err(|e| format!("{map}: {e}"))?;
        let renames = wasm_import_names::parse_map(&map_text).map_err(|e| format!("{map}: {e}"))?;
        let out = wasm_import_names::rename_imports(&wasm, module, new_module, &renames)
            .map_err(|e| format!("{input}: {e}"))?;
        std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wasm-import-names: {message}");
            ExitCode::FAILURE
        }
    }
}
