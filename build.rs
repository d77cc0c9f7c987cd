//! Links the unwinder into the `shmlease` tool instead of loading `libgcc_s.so.1` at
//! every start: the same unwinder (libgcc's `libgcc_eh.a`, what a static build links),
//! one shared library fewer to find, map, relocate and fault in, about 50 µs of the
//! 1.1 ms `shmlease run NAME -- true` takes (BENCHMARKS.md, "The CLI as quick as
//! flock(1)").
//!
//! The standard library asks for the unwinder with `-lgcc_s`. This script writes a
//! `libgcc_s.so` of its own, a linker script naming libgcc's static archives, into a
//! directory searched first — for this package's binaries only (`rustc-link-arg-bins`):
//! the library, the C library's cdylib and the Python extension link as before. It
//! does nothing for a static build (which links the archive anyway), a cross build, or
//! where the C compiler cannot name `libgcc_eh.a` (another toolchain): the tool then
//! links `libgcc_s` as before.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let crt_static = var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static");
    if !gnu_linux
        || crt_static
        || var("TARGET") != var("HOST")
        || var("CARGO_FEATURE_CLI").is_empty()
    {
        return;
    }
    // The compiler that links (cargo's `linker` setting, else rustc's default `cc`).
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let archive = |flag: &str| -> Option<PathBuf> {
        let out = Command::new(&linker).arg(flag).output().ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        // Asked for a file it does not have, gcc prints the bare name back.
        (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
    };
    let (Some(eh), Some(gcc)) =
        (archive("-print-file-name=libgcc_eh.a"), archive("-print-libgcc-file-name"))
    else {
        return;
    };
    // A compiler upgrade moves or removes them: then look again.
    println!("cargo:rerun-if-changed={}", eh.display());
    println!("cargo:rerun-if-changed={}", gcc.display());
    let dir = PathBuf::from(var("OUT_DIR")).join("unwind");
    std::fs::create_dir_all(&dir).expect("creating OUT_DIR/unwind");
    // What the system's own libgcc_s.so script says (`GROUP ( libgcc_s.so.1 -lgcc )`),
    // with the unwinder's archive in place of the shared library.
    let script = format!("GROUP ( \"{}\" \"{}\" )\n", eh.display(), gcc.display());
    std::fs::write(dir.join("libgcc_s.so"), script).expect("writing OUT_DIR/unwind/libgcc_s.so");
    println!("cargo:rustc-link-arg-bins=-L{}", dir.display());
}
