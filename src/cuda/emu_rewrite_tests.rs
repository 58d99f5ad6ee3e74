//! The cases of kernels/emu/tests/test_rewrite.py, run against build.rs's Rust port of
//! rewrite.py (build/emu_rewrite.rs), so the two cannot drift apart.

#[path = "../../build/emu_rewrite.rs"]
mod emu_rewrite;

use emu_rewrite::{kernel_names, rewrite, rewrite_line, wrapper, wrapper_variant};

fn check(src: &str, want: &str) {
    assert_eq!(rewrite_line(src, "t.cu:1").as_deref(), Ok(want), "{src}");
}

#[test]
fn static_declarations() {
    check(
        "  __shared__ float buf[256];",
        "  EMU_SHARED(buf, 0, float[256]);",
    );
    check("__shared__ float total;", "EMU_SHARED(total, 0, float);");
    check(
        "\t__shared__ float tile[TILE][TILE + 1];  // padded",
        "\tEMU_SHARED(tile, 0, float[TILE][TILE + 1]);  // padded",
    );
    check(
        "__shared__ __align__(16) float4 t[32][ 33 ];",
        "EMU_SHARED(t, 16, float4[32][ 33 ]);",
    );
    check(
        "__shared__ Pair<float, int> p[4];",
        "EMU_SHARED(p, 0, Pair<float, int>[4]);",
    );
    check(
        "volatile __shared__ int flag;",
        "EMU_SHARED(flag, 0, volatile int);",
    );
    check(
        "static __shared__ unsigned int bins[16]; int x = 0;",
        "EMU_SHARED(bins, 0, unsigned int[16]); int x = 0;",
    );
}

#[test]
fn extern_declarations() {
    check(
        "extern __shared__ float smem[];",
        "EMU_EXTERN_SHARED(smem, 0, float);",
    );
    check(
        "    extern __shared__ __align__(16) unsigned char smem_raw[];",
        "    EMU_EXTERN_SHARED(smem_raw, 16, unsigned char);",
    );
}

#[test]
fn pragma_unroll_becomes_a_comment() {
    check("#pragma unroll", "//#pragma unroll");
    check(
        "    #  pragma unroll 8  // inner",
        "//    #  pragma unroll 8  // inner",
    );
    for line in [
        "#pragma once",
        "#pragma unroller",
        "// #pragma unroll",
        "x = \"#pragma unroll\";",
    ] {
        check(line, line);
    }
}

#[test]
fn lines_without_declarations_are_unchanged() {
    for line in [
        "float x = 1;",
        "// __shared__ float buf[4];",
        "int my__shared__x;",
        "",
    ] {
        check(line, line);
    }
}

#[test]
fn unsupported_forms_are_errors() {
    for line in [
        "__shared__ float a[4], b[4];",
        "#define DECL __shared__ float a[4];",
        "__shared__ float a[4] = {0};",
        "extern __shared__ float smem[64];",
        "__shared__ float a[];",
        "__shared__ float a[4]",
        "__shared__ buf[4];",
        "__shared__ int a, b;",
        "__shared__ Outer<Inner<int, 2>, 3> nested[4];",
    ] {
        let err = rewrite_line(line, "t.cu:1").expect_err(line);
        assert!(err.starts_with("t.cu:1"), "{line}: {err}");
    }
}

const SOURCE: &str = concat!(
    "#include <cuda_bf16.h>\r\n",
    "// extern \"C\" __global__ void commented_out(float* x) {}\n",
    "extern \"C\" __global__ void __launch_bounds__(256) first(float* y) {\n",
    "  __shared__ float s[32];\n",
    "}\n",
    "extern \"C\" __global__ void\n",
    "second(const float* __restrict__ x,\n",
    "       int n) {}\n",
    "extern \"C\" __global__ void __launch_bounds__(128, 2) third() {}\n",
    "__device__ void helper() {}\n",
);

#[test]
fn rewrite_keeps_line_numbers() {
    let out = rewrite(SOURCE, "/k/op.cu").expect("rewrites");
    let lines: Vec<&str> = out.split_inclusive('\n').collect();
    assert_eq!(lines[0], "#line 1 \"/k/op.cu\"\n");
    assert_eq!(lines.len(), SOURCE.matches('\n').count() + 1);
    assert_eq!(lines[1], "#include <cuda_bf16.h>\r\n");
    assert_eq!(lines[4], "  EMU_SHARED(s, 0, float[32]);\n");
}

#[test]
fn error_names_the_line() {
    let err = rewrite("int a;\n__shared__ int a, b;\n", "/k/op.cu").expect_err("fails");
    assert!(err.starts_with("/k/op.cu:2: "), "{err}");
}

#[test]
fn finds_kernel_names() {
    assert_eq!(kernel_names(SOURCE), ["first", "second", "third"]);
}

#[test]
fn writes_the_wrapper() {
    assert_eq!(
        wrapper("/k/op.cu", "op.cu", &["first".into(), "second".into()]),
        "// Generated from /k/op.cu for the CPU emulator; do not edit.\n\
         #include \"cuda_emu.h\"\n\
         EMU_KERNELS_BEGIN\n\
         #include \"kernels/op.cu\"\n\
         EMU_KERNELS_END\n\
         EMU_EXPORT(first)\n\
         EMU_EXPORT(second)\n"
    );
}

#[test]
fn writes_the_float32_wrapper() {
    assert_eq!(
        wrapper_variant(
            "/k/op.cu",
            "op.cu",
            &["first".into(), "second".into()],
            ("float32", "SOFTPROMPT_F32", "emu32")
        ),
        "// Generated from /k/op.cu (float32 build) for the CPU emulator; do not edit.\n\
         #define SOFTPROMPT_F32 1\n\
         #include \"cuda_emu.h\"\n\
         #define first emu32_first\n\
         #define second emu32_second\n\
         EMU_KERNELS_BEGIN\n\
         #include \"kernels/op.cu\"\n\
         EMU_KERNELS_END\n\
         EMU_EXPORT_NAMED(first, emu32_launch_first)\n\
         EMU_EXPORT_NAMED(second, emu32_launch_second)\n"
    );
}
