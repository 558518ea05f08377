//! The names the loader looks up ([`cgtrace_common::names`]) against the built object: every
//! program is a program, every map a map, every global a global. Needs no root: it only parses
//! [`EBPF_OBJECT`].

use std::collections::{BTreeMap, BTreeSet};

use cgtrace_common::names::{global, map, program};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};

use super::EBPF_OBJECT;

/// Symbol name → (kind, name of its section).
fn symbols() -> BTreeMap<String, (SymbolKind, String)> {
    let file = object::File::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
    file.symbols()
        .filter_map(|sym| {
            let name = sym.name().ok()?.to_string();
            let section = match sym.section() {
                SymbolSection::Section(i) => {
                    file.section_by_index(i).ok()?.name().ok()?.to_string()
                }
                _ => return None,
            };
            Some((name, (sym.kind(), section)))
        })
        .collect()
}

#[test]
fn every_bpf_name_is_in_the_object() {
    let syms = symbols();
    let missing = |names: &[&str], ok: &dyn Fn(&(SymbolKind, String)) -> bool| {
        names
            .iter()
            .filter(|n| !syms.get(**n).is_some_and(ok))
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    let programs = missing(program::ALL, &|(k, sec)| {
        *k == SymbolKind::Text && !sec.starts_with(".text")
    });
    assert!(
        programs.is_empty(),
        "programs not in the object: {programs:?}"
    );
    let maps = missing(map::ALL, &|(_, sec)| sec == "maps");
    assert!(maps.is_empty(), "maps not in the object: {maps:?}");
    let globals = missing(global::ALL, &|(k, sec)| {
        *k == SymbolKind::Data
            && (sec.starts_with(".rodata") || sec.starts_with(".data") || sec.starts_with(".bss"))
    });
    assert!(globals.is_empty(), "globals not in the object: {globals:?}");
}

#[test]
fn every_program_in_the_object_has_a_name_constant() {
    // The other direction: a program added to cgtrace-ebpf gets its constant too.
    let file = object::File::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
    let known: BTreeSet<&str> = program::ALL.iter().copied().collect();
    let unnamed: Vec<String> = symbols()
        .into_iter()
        .filter(|(name, (kind, sec))| {
            *kind == SymbolKind::Text
                && !sec.starts_with(".text")
                && sym_is_global(&file, name)
                && !known.contains(name.as_str())
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        unnamed.is_empty(),
        "programs without a constant in cgtrace_common::names: {unnamed:?}"
    );
}

fn sym_is_global(file: &object::File<'_>, name: &str) -> bool {
    file.symbols()
        .any(|s| s.name().ok() == Some(name) && s.is_global())
}
