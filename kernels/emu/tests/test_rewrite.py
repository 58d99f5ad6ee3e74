"""Tests of rewrite.py, the reference that build.rs reimplements; run by `make test`."""
import os
import subprocess
import sys
import tempfile
import unittest

EMU = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, EMU)
sys.dont_write_bytecode = True  # keep kernels/emu free of __pycache__
import rewrite  # noqa: E402


class RewriteLine(unittest.TestCase):
    def check(self, src, want):
        self.assertEqual(rewrite.rewrite_line(src, "t.cu:1"), want)

    def test_static_declarations(self):
        self.check("  __shared__ float buf[256];", "  EMU_SHARED(buf, 0, float[256]);")
        self.check("__shared__ float total;", "EMU_SHARED(total, 0, float);")
        self.check("\t__shared__ float tile[TILE][TILE + 1];  // padded",
                   "\tEMU_SHARED(tile, 0, float[TILE][TILE + 1]);  // padded")
        self.check("__shared__ __align__(16) float4 t[32][ 33 ];", "EMU_SHARED(t, 16, float4[32][ 33 ]);")
        self.check("__shared__ Pair<float, int> p[4];", "EMU_SHARED(p, 0, Pair<float, int>[4]);")
        self.check("volatile __shared__ int flag;", "EMU_SHARED(flag, 0, volatile int);")
        self.check("static __shared__ unsigned int bins[16]; int x = 0;",
                   "EMU_SHARED(bins, 0, unsigned int[16]); int x = 0;")

    def test_extern_declarations(self):
        self.check("extern __shared__ float smem[];", "EMU_EXTERN_SHARED(smem, 0, float);")
        self.check("    extern __shared__ __align__(16) unsigned char smem_raw[];",
                   "    EMU_EXTERN_SHARED(smem_raw, 16, unsigned char);")

    def test_pragma_unroll_becomes_a_comment(self):
        self.check("#pragma unroll", "//#pragma unroll")
        self.check("    #  pragma unroll 8  // inner", "//    #  pragma unroll 8  // inner")
        for line in ["#pragma once", "#pragma unroller", "// #pragma unroll", 'x = "#pragma unroll";']:
            self.check(line, line)

    def test_lines_without_declarations_are_unchanged(self):
        for line in ["float x = 1;", "// __shared__ float buf[4];", "int my__shared__x;", ""]:
            self.check(line, line)

    def test_unsupported_forms_are_errors(self):
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
        ]:
            with self.subTest(line=line), self.assertRaisesRegex(rewrite.RewriteError, "t.cu:1"):
                rewrite.rewrite_line(line, "t.cu:1")


class WholeFile(unittest.TestCase):
    SOURCE = (
        "#include <cuda_bf16.h>\r\n"
        '// extern "C" __global__ void commented_out(float* x) {}\n'
        'extern "C" __global__ void __launch_bounds__(256) first(float* y) {\n'
        "  __shared__ float s[32];\n"
        "}\n"
        'extern "C" __global__ void\n'
        "second(const float* __restrict__ x,\n"
        "       int n) {}\n"
        'extern "C" __global__ void __launch_bounds__(128, 2) third() {}\n'
        "__device__ void helper() {}\n"
    )

    def test_rewrite_keeps_line_numbers(self):
        out = rewrite.rewrite(self.SOURCE, "/k/op.cu")
        lines = out.splitlines(keepends=True)
        self.assertEqual(lines[0], '#line 1 "/k/op.cu"\n')
        self.assertEqual(len(lines), self.SOURCE.count("\n") + 1)
        self.assertEqual(lines[1], "#include <cuda_bf16.h>\r\n")
        self.assertEqual(lines[4], "  EMU_SHARED(s, 0, float[32]);\n")

    def test_error_names_the_line(self):
        with self.assertRaisesRegex(rewrite.RewriteError, "/k/op.cu:2: "):
            rewrite.rewrite("int a;\n__shared__ int a, b;\n", "/k/op.cu")

    def test_kernel_names(self):
        self.assertEqual(rewrite.kernel_names(self.SOURCE), ["first", "second", "third"])

    def test_wrapper(self):
        self.assertEqual(
            rewrite.wrapper("/k/op.cu", "op.cu", ["first", "second"]),
            "// Generated from /k/op.cu for the CPU emulator; do not edit.\n"
            '#include "cuda_emu.h"\n'
            "EMU_KERNELS_BEGIN\n"
            '#include "kernels/op.cu"\n'
            "EMU_KERNELS_END\n"
            "EMU_EXPORT(first)\n"
            "EMU_EXPORT(second)\n",
        )


class CompileErrors(unittest.TestCase):
    """Mistakes that must stop the build rather than misbehave at run time."""

    def compile(self, code):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "t.cpp")
            with open(path, "w") as f:
                f.write('#include "cuda_emu.h"\n' + code)
            cxx = os.environ.get("CXX", "g++")
            return subprocess.run(
                [cxx, "-std=c++17", "-fsyntax-only", "-I", EMU, "-I", os.path.join(EMU, "include"), path],
                capture_output=True, text=True,
            )

    def test_unrewritten_shared_fails(self):
        r = self.compile("void k() { __shared__ float buf[4]; (void)buf; }\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("must be rewritten by kernels/emu/rewrite.py", r.stderr)

    def test_namespace_scope_shared_fails(self):
        r = self.compile("EMU_SHARED(buf, 0, float[4]);\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("__shared__ declared outside a function", r.stderr)

    def test_rewritten_shared_compiles(self):
        r = self.compile("void k() { EMU_SHARED(buf, 0, float[4]); EMU_EXTERN_SHARED(s, 16, float); buf[0] = s[0]; }\n")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main()
