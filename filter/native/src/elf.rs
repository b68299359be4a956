//! The names an ELF executable exports, read from its `.dynsym` section on disk (what
//! `nm -D --defined-only` lists). Read from the file rather than walked in memory: the file's
//! section headers say plainly where the table is and how long it is, where the in-memory
//! dynamic section needs the hash tables to size it and differs between C libraries.
//! ELF64 little-endian only (x86-64, aarch64: the platforms Envoy ships for).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const SHT_DYNSYM: u32 = 11;
const SYM_SIZE: usize = 24;
/// Sanity bound on the sections read (Envoy's `.dynsym` + `.dynstr` are ~100 KiB).
const MAX_SECTION: u64 = 64 << 20;

/// Why the symbols could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    Io(String),
    /// Not an ELF64 little-endian file, or a malformed one.
    Format(&'static str),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Io(e) => write!(f, "reading the executable: {e}"),
            ElfError::Format(why) => write!(f, "the executable is not a usable ELF file: {why}"),
        }
    }
}

impl std::error::Error for ElfError {}

fn io(e: std::io::Error) -> ElfError {
    ElfError::Io(e.to_string())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    b.get(at..at + 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_le_bytes)
        .ok_or(ElfError::Format("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or(ElfError::Format("truncated"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or(ElfError::Format("truncated"))
}

fn read_at(file: &mut File, offset: u64, len: u64) -> Result<Vec<u8>, ElfError> {
    if len > MAX_SECTION {
        return Err(ElfError::Format("section too large"));
    }
    let len = usize::try_from(len).map_err(|_| ElfError::Format("section too large"))?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// A section header's fields this reader uses.
struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

/// The defined (not imported) dynamic symbols of `path` whose names start with `prefix`.
pub fn defined_dynamic_symbols(path: &Path, prefix: &str) -> Result<BTreeSet<String>, ElfError> {
    let mut file = File::open(path).map_err(io)?;
    let header = read_at(&mut file, 0, 64)?;
    if header.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::Format("no ELF magic"));
    }
    if header.get(4) != Some(&2) || header.get(5) != Some(&1) {
        return Err(ElfError::Format("not ELF64 little-endian"));
    }
    let shoff = u64_at(&header, 0x28)?;
    let shentsize = u64::from(u16_at(&header, 0x3a)?);
    let mut shnum = u64::from(u16_at(&header, 0x3c)?);
    if shentsize < 64 {
        return Err(ElfError::Format("bad section header size"));
    }
    let section = |file: &mut File, i: u64| -> Result<Section, ElfError> {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or(ElfError::Format("bad section offset"))?;
        let h = read_at(file, at, 64)?;
        Ok(Section {
            kind: u32_at(&h, 4)?,
            offset: u64_at(&h, 0x18)?,
            size: u64_at(&h, 0x20)?,
            link: u32_at(&h, 0x28)?,
        })
    };
    if shnum == 0 && shoff != 0 {
        // Extended numbering: the count is in section 0's size.
        shnum = section(&mut file, 0)?.size;
    }
    if shnum > 1 << 16 {
        return Err(ElfError::Format("too many sections"));
    }
    let mut dynsym = None;
    for i in 0..shnum {
        let s = section(&mut file, i)?;
        if s.kind == SHT_DYNSYM {
            dynsym = Some(s);
            break;
        }
    }
    let dynsym = dynsym.ok_or(ElfError::Format("no dynamic symbol table"))?;
    let strtab = section(&mut file, u64::from(dynsym.link))?;
    let syms = read_at(&mut file, dynsym.offset, dynsym.size)?;
    let strs = read_at(&mut file, strtab.offset, strtab.size)?;
    let mut out = BTreeSet::new();
    for sym in syms.chunks_exact(SYM_SIZE) {
        let name_at = usize::try_from(u32_at(sym, 0)?).map_err(|_| ElfError::Format("bad name"))?;
        let shndx = u16_at(sym, 6)?;
        if shndx == 0 {
            continue; // SHN_UNDEF: imported
        }
        let name = strs
            .get(name_at..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .ok_or(ElfError::Format("bad symbol name"))?;
        if name.starts_with(prefix.as_bytes()) {
            out.insert(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_an_error() {
        let dir = std::env::temp_dir().join(format!("wba-elf-{}", std::process::id()));
        std::fs::write(&dir, b"#!/bin/sh\necho hi\n").unwrap();
        let r = defined_dynamic_symbols(&dir, "x");
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(r, Err(ElfError::Format(_)) | Err(ElfError::Io(_))));
        assert!(defined_dynamic_symbols(Path::new("/nonexistent/wba"), "x").is_err());
    }

    #[test]
    fn reads_this_test_binary() {
        // A PIE test binary imports libc's functions: undefined, not listed.
        let syms = defined_dynamic_symbols(Path::new("/proc/self/exe"), "malloc").unwrap();
        assert!(!syms.contains("malloc"));
    }
}
