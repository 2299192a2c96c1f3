//! Fuzz target `config`: YAML text → `Config::parse` (substitution, RawConfig, validation) of
//! the switchyard crate. Must never panic: every bad file is a list of problems. Variables
//! named `SET*` resolve (to a value derived from the name), all others are unset.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| name.starts_with("SET").then(|| format!("v-{name}"));
    match switchyard::config::Config::parse(text, &lookup) {
        Ok(_) => {}
        Err(e) => {
            assert!(!e.0.is_empty(), "a refused config names at least one problem");
            let _ = e.to_string();
        }
    }
});
