// A minimal test harness for the emulator: TEST(name) registers a function, CHECK records a
// failure and keeps going, main() (harness.cpp) prints one line per test and the totals.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_emu.h"

struct TestCase {
  const char* name;
  void (*fn)();
};
std::vector<TestCase>& registry();
struct RegisterTest {
  RegisterTest(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};
#define TEST(name)                                        \
  static void name();                                     \
  static const RegisterTest register_##name(#name, name); \
  static void name()

void record_failure(const char* file, int line, const std::string& what);
std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond) \
  do { if (!(cond)) record_failure(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_MSG(cond, ...) \
  do { if (!(cond)) record_failure(__FILE__, __LINE__, #cond ": " + strprintf(__VA_ARGS__)); } while (0)

// Returns the number of failures recorded so far, so loops can stop after the first few.
int failures();

using LaunchFn = int (*)(const unsigned grid[3], const unsigned block[3], size_t smem, void** args);
#define DECLARE_KERNEL(name) \
  extern "C" int emu_launch_##name(const unsigned grid[3], const unsigned block[3], size_t, void**)

// Launches with cuLaunchKernel's convention: one pointer per argument, pointing at its value.
// The argument types must match the kernel's parameters exactly, as with the driver API.
template <class... A>
int launch(LaunchFn fn, dim3 grid, dim3 block, size_t smem, A... args) {
  void* ptrs[] = {static_cast<void*>(&args)..., nullptr};
  const unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
  return fn(g, b, smem, ptrs);
}

// Largest relative error |got - want| / max(|want|, 1); NaN counts as infinite.
inline double max_rel_error(const float* got, const double* want, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = std::fabs(got[i] - want[i]) / std::fmax(std::fabs(want[i]), 1.0);
    worst = std::isnan(e) ? INFINITY : std::fmax(worst, e);
  }
  return worst;
}
