// Raw mma.sync m16n8k16 (kernels/mma.cuh, emu/detail/mma.h) against scalar products in double:
// PTX's fragment layout gives the matrix product, misplaced fragments do not.
#include <memory>
#include <random>

#include "harness.h"

DECLARE_KERNEL(mma_tile_bf16);
DECLARE_KERNEL(mma_misuse);

namespace {

template <class T>
std::vector<T> random_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-2, 2);
  std::vector<T> v(n);
  for (auto& x : v) x = T(d(rng));
  return v;
}

// Worst relative error of each warp's d against a * b + c (scalar, double), per warp.
double run_tiles(int warps, int misplace) {
  const auto a = random_values<__nv_bfloat16>(warps * 256, 61 + warps);
  const auto b = random_values<__nv_bfloat16>(warps * 128, 62 + warps);
  const auto c = random_values<float>(warps * 128, 63 + warps);
  std::vector<float> d(warps * 128, NAN);
  const int rc = launch(emu_launch_mma_tile_bf16, dim3(1), dim3(32 * warps), 0, d.data(), a.data(), b.data(),
                        c.data(), misplace);
  CHECK_MSG(rc == EMU_OK, "%s", emu_last_error());
  double worst = 0;
  for (int w = 0; w < warps; ++w)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double want = c[w * 128 + m * 8 + n];
        for (int k = 0; k < 16; ++k)
          want += static_cast<double>(float(a[w * 256 + m * 16 + k])) * float(b[w * 128 + k * 8 + n]);
        const double got = d[w * 128 + m * 8 + n];
        const double e = std::fabs(got - want) / std::fmax(std::fabs(want), 1e-3);
        worst = std::isnan(got) ? INFINITY : std::fmax(worst, e);
      }
  return worst;
}

TEST(mma_documented_layout_matches_scalar_products) {
  for (int warps : {1, 4, 32}) {
    const double worst = run_tiles(warps, 0);
    CHECK_MSG(worst < 1e-6, "%d warps: worst relative error %g", warps, worst);
  }
}

TEST(mma_misplaced_fragments_give_wrong_products) {
  for (int misplace : {1, 2}) {
    const double worst = run_tiles(4, misplace);
    CHECK_MSG(worst > 0.1, "misplace %d: worst relative error only %g", misplace, worst);
  }
}

TEST(mma_needs_the_whole_warp) {
  std::vector<float> d(32);
  int rc = launch(emu_launch_mma_misuse, dim3(1), dim3(16), 0, d.data(), 0);
  CHECK_MSG(rc == EMU_ERROR_WARP, "partial warp: status %d (%s)", rc, emu_last_error());
  rc = launch(emu_launch_mma_misuse, dim3(1), dim3(32), 0, d.data(), 1);
  CHECK_MSG(rc == EMU_ERROR_WARP, "odd lanes exit: status %d (%s)", rc, emu_last_error());
  rc = launch(emu_launch_mma_misuse, dim3(1), dim3(32), 0, d.data(), 0);
  CHECK_MSG(rc == EMU_OK, "healthy launch: %s", emu_last_error());
  for (int i = 0; i < 32; ++i) CHECK(d[i] == 0.0f);
}

}  // namespace
