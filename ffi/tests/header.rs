//! The committed `include/shmlease.h` is exactly what the pinned cbindgen generates from
//! `ffi/src` (rewrite it with `SHMLEASE_BLESS_HEADER=1 cargo test -p shmlease-ffi --test
//! header`), and it is a well-behaved header: C99 and C++ clean, includable twice, no
//! atomics or 128-bit integers.

use std::path::PathBuf;
use std::process::Command;

fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    ffi_dir().join("../include/shmlease.h")
}

fn generate() -> String {
    let dir = ffi_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_is_fresh() {
    let fresh = generate();
    let path = header_path();
    if std::env::var_os("SHMLEASE_BLESS_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("writing include/shmlease.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()))
            + 1;
        panic!(
            "include/shmlease.h is stale: it differs from what cbindgen generates from ffi/src \
             (first difference at line {line}).\nRegenerate it with:\n    \
             SHMLEASE_BLESS_HEADER=1 cargo test -p shmlease-ffi --test header\nand commit it."
        );
    }
}

#[test]
fn header_has_guard_version_macros_and_no_atomics() {
    let h = generate();
    for needle in [
        "#ifndef SHMLEASE_H",
        "#define SHMLEASE_H",
        "extern \"C\" {",
        "#define SHMLEASE_VERSION_MAJOR ",
        "#define SHMLEASE_VERSION_MINOR ",
        "#define SHMLEASE_VERSION_PATCH ",
        "SHMLEASE_OK = 0,",
        "typedef struct shmlease_table shmlease_table;",
        "typedef struct shmlease_lease shmlease_lease;",
    ] {
        assert!(h.contains(needle), "header lacks {needle:?}");
    }
    for banned in ["_Atomic", "__int128", "Atomic", "uintptr_t"] {
        assert!(!h.contains(banned), "header exposes {banned:?}");
    }
    // A doc comment right before every function declaration and type.
    let lines: Vec<&str> = h.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let declares = l.starts_with("typedef ")
            || l.starts_with("#define SHMLEASE_")
            || (l.contains("shmlease_") && l.contains('(') && !l.starts_with(' '));
        if declares
            && !l.starts_with("typedef struct shmlease_table ")
            && !l.starts_with("typedef struct shmlease_lease ")
            && !l.starts_with("#define SHMLEASE_H")
        {
            assert!(
                i > 0 && lines[i - 1].trim_end().ends_with("*/"),
                "no doc comment before line {}: {l}",
                i + 1
            );
        }
    }
}

/// Whether `tool` runs; if not, says so loudly (the test then checks nothing).
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!!!! SKIPPED: `{tool}` is not installed; this check did not run !!!!!");
    }
    ok
}

fn compile_twice_included(compiler: &str, flags: &[&str], ext: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("header-check");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("twice.{ext}"));
    std::fs::write(
        &src,
        "#include \"shmlease.h\"\n#include \"shmlease.h\"\n\
         int main(void) {\n\
         \x20   shmlease_table *t = 0; shmlease_status s = SHMLEASE_OK; (void)t;\n\
         \x20   return (int)s + SHMLEASE_VERSION_MAJOR * 0;\n}\n",
    )
    .unwrap();
    let include = ffi_dir().join("../include");
    let out = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(&include)
        .arg("-fsyntax-only")
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {flags:?} rejects include/shmlease.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_is_c99_clean_and_survives_double_inclusion() {
    if have("gcc") {
        compile_twice_included(
            "gcc",
            &["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"],
            "c",
        );
    }
}

/// The storage's size and alignment checks take another branch of the header in C11
/// (`_Static_assert`) than in C99 (array types) and C++ (`static_assert`).
#[test]
fn header_is_c11_clean() {
    if have("gcc") {
        compile_twice_included(
            "gcc",
            &["-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror"],
            "c",
        );
    }
}

#[test]
fn header_compiles_as_cpp() {
    if have("g++") {
        compile_twice_included(
            "g++",
            &["-std=c++11", "-pedantic", "-Wall", "-Wextra", "-Werror"],
            "cpp",
        );
    }
}

/// The header's ABI checks bite: a header whose `shmlease_lease_storage` had another
/// size, or alignment, than its constants say is rejected by C99, C11 and C++ compilers.
#[test]
fn header_rejects_a_storage_of_the_wrong_size_or_alignment() {
    let header = std::fs::read_to_string(header_path()).expect("include/shmlease.h");
    let field = "uint64_t _private[8];";
    assert!(header.contains(field), "the storage's field changed: update this test");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("header-abi-check");
    std::fs::create_dir_all(&dir).unwrap();
    for (what, wrong) in
        [("size", "uint64_t _private[9];"), ("alignment", "uint32_t _private[16];")]
    {
        let h = dir.join("shmlease.h");
        std::fs::write(&h, header.replace(field, wrong)).unwrap();
        for (compiler, std, ext) in
            [("gcc", "-std=c99", "c"), ("gcc", "-std=c11", "c"), ("g++", "-std=c++11", "cpp")]
        {
            if !have(compiler) {
                continue;
            }
            let src = dir.join(format!("use.{ext}"));
            std::fs::write(&src, "#include \"shmlease.h\"\nint main(void) { return 0; }\n")
                .unwrap();
            let out = Command::new(compiler)
                .args([std, "-fsyntax-only", "-I"])
                .arg(&dir)
                .arg(&src)
                .output()
                .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
            assert!(
                !out.status.success(),
                "{compiler} {std} accepted a storage of the wrong {what}"
            );
        }
    }
}
