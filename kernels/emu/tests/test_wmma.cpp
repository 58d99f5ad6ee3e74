// nvcuda::wmma under the emulator (tests/kernels/wmma.cu) against scalar products in double.
#include <memory>
#include <random>

#include "harness.h"

DECLARE_KERNEL(wmma_gemm_bf16);
DECLARE_KERNEL(wmma_gemm_half);
DECLARE_KERNEL(wmma_gemm_half_acc);
DECLARE_KERNEL(wmma_gemm_tiled);
DECLARE_KERNEL(wmma_row_scale);
DECLARE_KERNEL(wmma_store_then_read);
DECLARE_KERNEL(wmma_misuse);

namespace {

// 32-byte aligned, as cudaMalloc's pointers are (and wmma requires).
template <class T>
struct Buffer {
  explicit Buffer(size_t n) : n(n), p(static_cast<T*>(std::aligned_alloc(256, (n * sizeof(T) + 255) / 256 * 256))) {}
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T& operator[](size_t i) { return p[i]; }
  size_t n;
  T* p;
};

template <class T>
void fill_random(Buffer<T>& b, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-2, 2);
  for (size_t i = 0; i < b.n; ++i) b[i] = T(d(rng));
}

// Element (r, c) of a 16x16 matrix with leading dimension ld, stored row- or column-major.
size_t at(int r, int c, int ld, bool col) { return col ? static_cast<size_t>(c) * ld + r : static_cast<size_t>(r) * ld + c; }

template <class T>
void check_gemm_layouts(LaunchFn fn, const char* type) {
  Buffer<T> a(16 * 24), b(16 * 24);
  Buffer<float> c(16 * 20), d(16 * 20);
  fill_random(a, 11);
  fill_random(b, 12);
  fill_random(c, 13);
  for (int mode = 0; mode < 16; ++mode) {
    const int a_col = mode & 1, b_col = (mode >> 1) & 1, c_col = (mode >> 2) & 1, d_col = (mode >> 3) & 1;
    std::memset(d.p, 0xff, d.n * sizeof(float));
    const int rc = launch(fn, dim3(1), dim3(32), 0, d.p, static_cast<const T*>(a.p),
                          static_cast<const T*>(b.p), static_cast<const float*>(c.p), a_col, b_col, c_col, d_col);
    CHECK_MSG(rc == EMU_OK, "%s", emu_last_error());
    double worst = 0;
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 16; ++n) {
        double want = c[at(r, n, 20, c_col)];
        for (int k = 0; k < 16; ++k)
          want += static_cast<double>(float(a[at(r, k, 24, a_col)])) * float(b[at(k, n, 24, b_col)]);
        const double got = d[at(r, n, 20, d_col)];
        const double e = std::fabs(got - want) / std::fmax(std::fabs(want), 1e-3);
        worst = std::isnan(got) ? INFINITY : std::fmax(worst, e);
      }
    CHECK_MSG(worst < 1e-6, "%s a_col=%d b_col=%d c_col=%d d_col=%d: worst relative error %g", type,
              a_col, b_col, c_col, d_col, worst);
  }
}

TEST(wmma_bf16_all_layouts_match_scalar_products) { check_gemm_layouts<__nv_bfloat16>(emu_launch_wmma_gemm_bf16, "bf16"); }

TEST(wmma_half_all_layouts_match_scalar_products) { check_gemm_layouts<__half>(emu_launch_wmma_gemm_half, "half"); }

TEST(wmma_half_accumulator_rounds_once) {
  Buffer<__half> a(256), b(256), c(256), d(256);
  fill_random(a, 21);
  fill_random(b, 22);
  fill_random(c, 23);
  CHECK_MSG(launch(emu_launch_wmma_gemm_half_acc, dim3(1), dim3(32), 0, d.p, static_cast<const __half*>(a.p),
                   static_cast<const __half*>(b.p), static_cast<const __half*>(c.p)) == EMU_OK,
            "%s", emu_last_error());
  int bad = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      double want = float(c[r * 16 + n]);
      for (int k = 0; k < 16; ++k) want += static_cast<double>(float(a[r * 16 + k])) * float(b[n * 16 + k]);
      bad += float(d[r * 16 + n]) != float(__half(want));
    }
  CHECK_MSG(bad == 0, "%d of 256 half results differ from the correctly rounded sum", bad);
}

TEST(wmma_many_warps_keep_their_own_scratch) {
  struct Shape { int M, N, K; dim3 block; };
  for (const Shape s : {Shape{64, 32, 48, dim3(256)}, Shape{32, 64, 32, dim3(32, 2, 4)}, Shape{16, 16, 64, dim3(32)}}) {
    Buffer<__nv_bfloat16> a(s.M * s.K), b(s.K * s.N);
    Buffer<float> c(s.M * s.N);
    fill_random(a, 31);
    fill_random(b, 32);
    std::memset(c.p, 0xff, c.n * sizeof(float));
    const size_t smem = (s.M * (s.K + 8) + s.K * (s.N + 8)) * sizeof(__nv_bfloat16);
    const int rc = launch(emu_launch_wmma_gemm_tiled, dim3(1), s.block, smem, c.p,
                          static_cast<const __nv_bfloat16*>(a.p), static_cast<const __nv_bfloat16*>(b.p), s.M, s.N, s.K);
    CHECK_MSG(rc == EMU_OK, "%s", emu_last_error());
    double worst = 0;
    for (int m = 0; m < s.M; ++m)
      for (int n = 0; n < s.N; ++n) {
        double want = 0, magnitude = 0;  // one float rounding per k step: error relative to sum |ab|
        for (int k = 0; k < s.K; ++k) {
          const double p = static_cast<double>(float(a[m * s.K + k])) * float(b[k * s.N + n]);
          want += p;
          magnitude += std::fabs(p);
        }
        const double got = c[m * s.N + n];
        worst = std::isnan(got) ? INFINITY : std::fmax(worst, std::fabs(got - want) / magnitude);
      }
    CHECK_MSG(worst < 1e-6, "M=%d N=%d K=%d: worst relative error %g", s.M, s.N, s.K, worst);
  }
}

TEST(wmma_elementwise_access_with_a_learned_row_map) {
  Buffer<__nv_bfloat16> a(256), b(256);
  Buffer<float> out(256);
  fill_random(a, 41);
  fill_random(b, 42);
  CHECK_MSG(launch(emu_launch_wmma_row_scale, dim3(1), dim3(32), 0, out.p, static_cast<const __nv_bfloat16*>(a.p),
                   static_cast<const __nv_bfloat16*>(b.p)) == EMU_OK,
            "%s", emu_last_error());
  double worst = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += static_cast<double>(float(a[r * 16 + k])) * float(b[k * 16 + n]);
      want *= r + 1;
      worst = std::fmax(worst, std::fabs(out[r * 16 + n] - want) / std::fmax(std::fabs(want), 1e-3));
    }
  CHECK_MSG(worst < 1e-6, "worst relative error %g", worst);
}

TEST(wmma_reading_a_store_needs_syncwarp) {
  Buffer<float> out(32);
  CHECK(launch(emu_launch_wmma_store_then_read, dim3(1), dim3(32), 0, out.p, 1) == EMU_OK);
  for (int i = 0; i < 32; ++i) CHECK(out[i] == 512.0f);
  int poisoned = 0;
  for (unsigned seed = 1; seed <= 8; ++seed) {
    emu_set_seed(seed);
    CHECK(launch(emu_launch_wmma_store_then_read, dim3(1), dim3(32), 0, out.p, 0) == EMU_OK);
    for (int i = 0; i < 32; ++i) poisoned += std::isnan(out[i]);
  }
  emu_set_seed(1);
  CHECK_MSG(poisoned > 0, "no lane read poison without __syncwarp()");
}

TEST(wmma_misuse_fails_the_launch) {
  Buffer<__nv_bfloat16> a(512);
  Buffer<float> out(256);
  fill_random(a, 51);
  const __nv_bfloat16* ap = a.p;
  struct Case { int mode; unsigned threads; const char* message; };
  for (const Case c : {Case{1, 32, "not 32-byte aligned"}, Case{2, 32, "not a multiple of 16 bytes"},
                       Case{3, 32, "calls"}, Case{4, 16, "do not exist"}}) {
    const int rc = launch(emu_launch_wmma_misuse, dim3(1), dim3(c.threads), 0, out.p, ap, c.mode);
    CHECK_MSG(rc == EMU_ERROR_WARP, "mode %d: status %d (%s)", c.mode, rc, emu_last_error());
    CHECK_MSG(std::strstr(emu_last_error(), c.message) != nullptr, "mode %d: %s", c.mode, emu_last_error());
    CHECK_MSG(launch(emu_launch_wmma_misuse, dim3(1), dim3(32), 0, out.p, ap, 0) == EMU_OK,
              "healthy launch after mode %d: %s", c.mode, emu_last_error());
  }
}

}  // namespace
