// Launches the kernels in tests/kernels/ and checks them against host computations.
#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "harness.h"

DECLARE_KERNEL(reduce_tree);
DECLARE_KERNEL(reduce_warps);
DECLARE_KERNEL(neighbour_no_barrier);
DECLARE_KERNEL(neighbour_barrier);
DECLARE_KERNEL(barrier_votes);
DECLARE_KERNEL(barrier_loop);
DECLARE_KERNEL(shfl_probe);
DECLARE_KERNEL(segment_sums);
DECLARE_KERNEL(shfl_types);
DECLARE_KERNEL(votes);
DECLARE_KERNEL(active_masks);
DECLARE_KERNEL(atomics_all);
DECLARE_KERNEL(histogram);
DECLARE_KERNEL(reverse_rows);
DECLARE_KERNEL(scale_float4);
DECLARE_KERNEL(transpose);
DECLARE_KERNEL(read_unwritten);
DECLARE_KERNEL(write_ids);
DECLARE_KERNEL(many_params);
DECLARE_KERNEL(no_params);
DECLARE_KERNEL(big_frame);
DECLARE_KERNEL(bf16_axpy);
DECLARE_KERNEL(pair_ops);
DECLARE_KERNEL(math_fns);

namespace {

std::vector<float> random_floats(size_t n, unsigned seed, float lo = -1, float hi = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool is_poison(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u == 0xffffffffu;
}

// Sums of B rows of n floats, in double.
std::vector<double> row_sums(const std::vector<float>& x, int B, int n) {
  std::vector<double> s(B, 0.0);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < n; ++i) s[b] += x[b * n + i];
  return s;
}

TEST(block_reduce_with_shared_memory_and_barriers) {
  const int B = 7, n = 1000;
  const std::vector<float> x = random_floats(B * n, 1);
  std::vector<float> out(B, 0.0f);
  CHECK(launch(emu_launch_reduce_tree, dim3(B), dim3(256), 0, out.data(), x.data(), n) == EMU_OK);
  const std::vector<double> want = row_sums(x, B, n);
  CHECK_MSG(max_rel_error(out.data(), want.data(), B) < 1e-5, "%s", emu_last_error());
}

TEST(block_reduce_with_warp_shuffles) {
  const int B = 5, n = 129;
  const std::vector<float> x = random_floats(B * n, 2);
  std::vector<float> out(2 * B, 0.0f);
  CHECK(launch(emu_launch_reduce_warps, dim3(B), dim3(128), 0, out.data(), x.data(), n) == EMU_OK);
  const std::vector<double> want = row_sums(x, B, n);
  for (int b = 0; b < B; ++b) {
    CHECK_MSG(std::fabs(out[2 * b] - want[b]) < 1e-4, "block %d: %g vs %g", b, out[2 * b], want[b]);
    CHECK(out[2 * b + 1] == 128.0f);
  }
}

TEST(missing_barrier_reads_poison_under_some_seeds) {
  const int B = 4, T = 64;
  std::vector<std::vector<bool>> patterns;  // which reads saw poison, per seed
  for (unsigned long long seed = 1; seed <= 16; ++seed) {
    emu_set_seed(seed);
    std::vector<float> racy(B * T), fixed(B * T);
    CHECK(launch(emu_launch_neighbour_no_barrier, dim3(B), dim3(T), 0, racy.data()) == EMU_OK);
    CHECK(launch(emu_launch_neighbour_barrier, dim3(B), dim3(T), 0, fixed.data()) == EMU_OK);
    std::vector<bool> poisoned(B * T);
    for (int i = 0; i < B * T; ++i) poisoned[i] = is_poison(racy[i]);
    patterns.push_back(poisoned);
    for (int i = 0; i < B * T; ++i) CHECK(fixed[i] == static_cast<float>((i % T + 1) % T));
  }
  emu_set_seed(1);
  const auto any_poison = [](const std::vector<bool>& p) { return std::find(p.begin(), p.end(), true) != p.end(); };
  CHECK_MSG(std::any_of(patterns.begin(), patterns.end(), any_poison), "the race never showed");
  std::sort(patterns.begin(), patterns.end());
  CHECK_MSG(std::unique(patterns.begin(), patterns.end()) - patterns.begin() > 1,
            "every seed gave the same interleaving");
}

TEST(same_seed_same_schedule) {
  std::vector<float> a(256), b(256);
  emu_set_seed(42);
  CHECK(launch(emu_launch_neighbour_no_barrier, dim3(4), dim3(64), 0, a.data()) == EMU_OK);
  CHECK(launch(emu_launch_neighbour_no_barrier, dim3(4), dim3(64), 0, b.data()) == EMU_OK);
  emu_set_seed(1);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

TEST(shared_memory_starts_poisoned_in_every_block) {
  std::vector<float> out(3 * 32, 0.0f);
  CHECK(launch(emu_launch_read_unwritten, dim3(3), dim3(32), 0, out.data()) == EMU_OK);
  CHECK(std::all_of(out.begin(), out.end(), is_poison));
}

TEST(syncthreads_count_and_or) {
  std::vector<int> pred(96), out(3);
  for (int i = 0; i < 96; ++i) pred[i] = i % 3 == 0;
  CHECK(launch(emu_launch_barrier_votes, dim3(1), dim3(96), 0, out.data(), pred.data()) == EMU_OK);
  CHECK(out[0] == 32 && out[1] == 0 && out[2] == 1);
  std::fill(pred.begin(), pred.end(), 1);
  CHECK(launch(emu_launch_barrier_votes, dim3(1), dim3(96), 0, out.data(), pred.data()) == EMU_OK);
  CHECK(out[0] == 96 && out[1] == 1 && out[2] == 1);
}

// The CUDA C++ Programming Guide's rules, written independently of PTX's formula; offsets of
// 32 or more use their low five bits, as shfl.sync does.
int expected_source(int mode, int lane, int arg, int width) {
  const int seg = lane / width * width;
  const int a = arg & 31;
  switch (mode) {
    case 0: return seg + (arg & (width - 1));
    case 1: return lane - seg >= a ? lane - a : lane;
    case 2: return lane - seg + a < width ? lane + a : lane;
    default: return (lane ^ a) < seg + width ? (lane ^ a) : lane;  // earlier groups only
  }
}

TEST(shuffle_lane_rules_match_cuda) {
  std::vector<int> mode, arg, width;
  for (int w : {1, 2, 4, 8, 16, 32})
    for (int m = 0; m < 4; ++m)
      for (int a : {0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 40, -1, -6}) {
        if (m != 0 && a < 0) continue;
        mode.push_back(m);
        arg.push_back(a);
        width.push_back(w);
      }
  const int cases = static_cast<int>(mode.size());
  std::vector<int> out(cases * 32, -1);
  CHECK(launch(emu_launch_shfl_probe, dim3(1), dim3(32), 0, out.data(), mode.data(), arg.data(),
               width.data(), cases) == EMU_OK);
  for (int c = 0; c < cases && failures() < 10; ++c)
    for (int lane = 0; lane < 32; ++lane) {
      const int want = expected_source(mode[c], lane, arg[c], width[c]);
      CHECK_MSG(out[c * 32 + lane] == want, "mode %d arg %d width %d lane %d: got %d want %d",
                mode[c], arg[c], width[c], lane, out[c * 32 + lane], want);
    }
}

TEST(warp_reductions_with_width_16_and_8) {
  const int n = 128;
  std::vector<float> x(n), out(4 * n);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>((i * 37) % 101);
  CHECK(launch(emu_launch_segment_sums, dim3(2), dim3(64), 0, out.data(), x.data(), n) == EMU_OK);
  auto seg_sum = [&](int i, int width) {
    float s = 0;
    for (int j = i / width * width; j < i / width * width + width; ++j) s += x[j];
    return s;
  };
  for (int i = 0; i < n; ++i) {
    CHECK(out[i] == seg_sum(i, 32));
    CHECK(out[n + i] == seg_sum(i, 16));
    if (i % 8 == 0) CHECK(out[2 * n + i] == seg_sum(i, 8));
    if (i % 16 == 0) CHECK(out[3 * n + i] == seg_sum(i, 16));
  }
}

TEST(shuffles_carry_64_and_16_bit_values) {
  std::vector<double> d(32);
  std::vector<__nv_bfloat16> h(32);
  std::vector<long long> q(32);
  CHECK(launch(emu_launch_shfl_types, dim3(1), dim3(32), 0, d.data(), h.data(), q.data()) == EMU_OK);
  for (int lane = 0; lane < 32; ++lane) {
    CHECK(d[lane] == 1.0 + (31 - lane) * 1e-12);
    CHECK(float(h[lane]) == static_cast<float>(lane < 31 ? lane + 1 : lane));
    CHECK(q[lane] == static_cast<long long>(lane ^ 5) << 40);
  }
}

TEST(ballot_any_all_and_reductions) {
  const int T = 128;
  std::vector<int> pred(T);
  std::mt19937 rng(5);
  for (int& p : pred) p = rng() % 2;
  for (int i = 64; i < 96; ++i) pred[i] = 1;  // a warp where all agree
  std::vector<unsigned> out(9 * T);
  CHECK(launch(emu_launch_votes, dim3(2), dim3(64), 0, out.data(), pred.data()) == EMU_OK);
  for (int t = 0; t < T; ++t) {
    const int base = t / 32 * 32, lane = t % 32;
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l) ballot |= pred[base + l] ? 1u << l : 0;
    const unsigned* o = &out[9 * t];
    CHECK(o[0] == ballot);
    CHECK(o[1] == (ballot != 0));
    CHECK(o[2] == (ballot == ~0u));
    CHECK(o[3] == 3 * 496);
    CHECK(o[4] == static_cast<unsigned>(-7));
    CHECK(o[5] == 31);
    CHECK(o[6] == 0);
    CHECK(o[7] == (ballot & (lane < 16 ? 0x0000ffffu : 0xffff0000u)));
    CHECK(o[8] == ~0u);
  }
}

TEST(activemask_groups_lanes_at_the_same_call) {
  std::vector<unsigned> out(2 * 40);
  CHECK(launch(emu_launch_active_masks, dim3(1), dim3(40), 0, out.data()) == EMU_OK);
  for (int t = 0; t < 40; ++t) {
    const unsigned first = t < 32 ? (t < 10 ? 0x3ffu : ~0x3ffu) : 0xffu;
    CHECK_MSG(out[2 * t] == first, "thread %d: 0x%08x", t, out[2 * t]);
    CHECK(out[2 * t + 1] == (t < 32 ? ~0u : 0xffu));
  }
}

struct Counters {
  float* f;
  double* d;
  int* i;
  unsigned* u;
  unsigned long long* ull;
  int* imax;
  int* imin;
  unsigned* umax;
  unsigned* umin;
  int* cas;
  int* exch;
  __half* h;
  __nv_bfloat16* bf;
};

TEST(atomics_from_many_blocks) {
  float f = 0;
  double d = 0;
  int i = 0, imax = -1000000, imin = 1000000, cas = 0, exch = -1;
  unsigned u = 0, umax = 0, umin = ~0u;
  unsigned long long ull = 0;
  __half h = 0.0f;
  __nv_bfloat16 bf = 0.0f;
  const Counters c{&f, &d, &i, &u, &ull, &imax, &imin, &umax, &umin, &cas, &exch, &h, &bf};
  const int blocks = 13, threads = 96, n = blocks * threads;
  CHECK(launch(emu_launch_atomics_all, dim3(blocks), dim3(threads), 0, c) == EMU_OK);
  unsigned long long want_ull = 0;
  for (int g = 0; g < n; ++g) want_ull += static_cast<unsigned long long>(g) << 20;
  CHECK(f == n && d == n * 0.5 && i == n * (n - 1) / 2 && u == 2u * n && ull == want_ull);
  CHECK(imax == n - 1 - 100 && imin == 50 - (n - 1) && umax == n - 1u && umin == 7u);
  CHECK(cas == n && exch >= 0 && exch < n);
  CHECK(float(h) == n);      // integers up to 2048 are exact in half
  CHECK(float(bf) == 256);   // 256 + 1 rounds back to 256 in bf16
}

TEST(shared_memory_histogram) {
  const int n = 10007;
  std::vector<int> x(n);
  std::mt19937 rng(3);
  for (int& v : x) v = static_cast<int>(rng() % 1000);
  std::vector<unsigned> hist(16, 0), want(16, 0);
  for (int v : x) want[v & 15]++;
  CHECK(launch(emu_launch_histogram, dim3(5), dim3(128), 0, hist.data(), x.data(), n) == EMU_OK);
  CHECK(hist == want);
}

TEST(dynamic_shared_memory) {
  const int B = 3, n = 129;
  const std::vector<float> x = random_floats(B * n, 4);
  std::vector<float> y(B * n);
  CHECK(launch(emu_launch_reverse_rows, dim3(B), dim3(64), n * sizeof(float), y.data(), x.data(), n) == EMU_OK);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < n; ++i) CHECK(y[b * n + i] == x[b * n + n - 1 - i]);

  const int n4 = 50;
  std::vector<float4> in(n4), out(n4);
  for (int i = 0; i < n4; ++i) in[i] = make_float4(i, i + 0.5f, -i, 1);
  CHECK(launch(emu_launch_scale_float4, dim3(1), dim3(32), n4 * sizeof(float4), out.data(), in.data(), n4) == EMU_OK);
  for (int i = 0; i < n4; ++i) {
    const float4 v = in[n4 - 1 - i];
    CHECK(out[i].x == 2 * v.x && out[i].y == 2 * v.y && out[i].z == 2 * v.z && out[i].w == 2 * v.w);
  }
}

TEST(largest_dynamic_shared_memory_is_accepted) {
  const int n = 227 * 1024 / 4;
  const std::vector<float> x = random_floats(n, 9);
  std::vector<float> y(n);
  CHECK_MSG(launch(emu_launch_reverse_rows, dim3(1), dim3(256), n * sizeof(float), y.data(), x.data(), n) == EMU_OK,
            "%s", emu_last_error());
  CHECK(y[0] == x[n - 1] && y[n - 1] == x[0]);
}

TEST(two_dimensional_tile_transpose) {
  const int rows = 37, cols = 70;
  const std::vector<float> in = random_floats(rows * cols, 6);
  std::vector<float> out(rows * cols);
  CHECK(launch(emu_launch_transpose, dim3((cols + 31) / 32, (rows + 31) / 32), dim3(32, 8), 0,
               out.data(), in.data(), rows, cols) == EMU_OK);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) CHECK(out[c * rows + r] == in[r * cols + c]);
}

TEST(three_dimensional_grids_and_blocks) {
  for (const auto& [grid, block] : {std::pair{dim3(3, 2, 2), dim3(4, 3, 2)}, std::pair{dim3(2, 1, 3), dim3(8, 1, 4)},
                                    std::pair{dim3(1, 5, 1), dim3(1, 1, 64)}}) {
    const unsigned threads = block.x * block.y * block.z, blocks = grid.x * grid.y * grid.z;
    std::vector<uint4> out(threads * blocks, make_uint4(~0u, ~0u, ~0u, ~0u)), dims(2);
    CHECK(launch(emu_launch_write_ids, grid, block, 0, out.data(), dims.data()) == EMU_OK);
    CHECK(dims[0].x == block.x && dims[0].y == block.y && dims[0].z == block.z && dims[0].w == 32);
    CHECK(dims[1].x == grid.x && dims[1].y == grid.y && dims[1].z == grid.z);
    for (unsigned bz = 0, k = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx)
          for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
              for (unsigned tx = 0; tx < block.x; ++tx, ++k) {
                const uint4 v = out[k];
                CHECK(v.x == (tx | ty << 10 | tz << 20) && v.y == bx && v.z == by && v.w == bz);
              }
  }
}

struct Shape {
  int B, T;
  float scale;
};

TEST(kernel_parameters_of_every_kind) {
  double out[9] = {};
  const float p[2] = {0, 6.5f};
  const Shape shape{2, 129, 0.25f};
  CHECK(launch(emu_launch_many_params, dim3(1), dim3(32), 0, &out[0], static_cast<signed char>(-3),
               static_cast<short>(-300), 70000, -(1LL << 40), 1.5f, 2.25, size_t{1} << 33, shape,
               &p[0]) == EMU_OK);
  const double want[9] = {-3, -300, 70000, -static_cast<double>(1LL << 40), 1.5, 2.25,
                          static_cast<double>(size_t{1} << 33), 2129.25, 6.5};
  for (int i = 0; i < 9; ++i) CHECK_MSG(out[i] == want[i], "param %d: %g", i, out[i]);
  const unsigned one[3] = {1, 1, 1};
  CHECK(emu_launch_no_params(one, one, 0, nullptr) == EMU_OK);
}

TEST(fiber_stack_size_is_settable) {
  emu_set_stack_size(512 * 1024);
  std::vector<int> out(32);
  CHECK(launch(emu_launch_big_frame, dim3(2), dim3(32), 0, out.data()) == EMU_OK);
  for (int t = 0; t < 32; ++t) CHECK(out[t] == 24 * 1024 - 1 - t);
  emu_set_stack_size(0);
}

TEST(bf16_and_half_in_kernels) {
  const int n = 1000;
  std::vector<__nv_bfloat16> x(n), y(n), y0(n);
  const std::vector<float> r = random_floats(2 * n, 8, -4, 4);
  for (int i = 0; i < n; ++i) {
    x[i] = __float2bfloat16(r[i]);
    y[i] = y0[i] = __float2bfloat16(r[n + i]);
  }
  CHECK(launch(emu_launch_bf16_axpy, dim3(4), dim3(256), 0, y.data(), x.data(), 0.75f, n) == EMU_OK);
  for (int i = 0; i < n; ++i)
    CHECK(emu::detail::bits_of(y[i]) ==
          emu::detail::bits_of(__nv_bfloat16(0.75f * float(x[i]) + float(y0[i]))));

  std::vector<__nv_bfloat162> pairs(n);
  for (int i = 0; i < n; ++i) pairs[i] = __nv_bfloat162(x[i], y0[i]);
  std::vector<float> out(4 * n);
  CHECK(launch(emu_launch_pair_ops, dim3(4), dim3(256), 0, out.data(), pairs.data(), n) == EMU_OK);
  for (int i = 0; i < n; ++i) {
    CHECK(out[4 * i] == float(x[i]) && out[4 * i + 1] == float(y0[i]));
    CHECK(out[4 * i + 2] == float(__nv_bfloat16(float(x[i]) + float(y0[i]))));
    CHECK(out[4 * i + 3] == float(__half(float(__half(float(x[i]))) + float(__half(float(y0[i]))))));
  }
}

TEST(device_math_functions) {
  const int n = 300, k = 20;
  const std::vector<float> x = random_floats(n, 10, -5, 5);
  std::vector<float> out(k * n);
  CHECK(launch(emu_launch_math_fns, dim3(2), dim3(256), 0, out.data(), x.data(), n) == EMU_OK);
  for (int i = 0; i < n; ++i) {
    const double v = x[i];
    const double want[k] = {std::exp(v), std::exp(v), std::log(std::fabs(v) + 1), std::log(std::fabs(v) + 1),
                            std::erf(v), std::tanh(v), 1 / std::sqrt(std::fabs(v) + 1), std::sqrt(std::fabs(v)),
                            std::fmax(v, 0.5), std::fmin(v, 0.5), v / 3, 1 / (v + 10), v * 2 + 1, 1, 1, 1,
                            std::fmax(v, 0.0) + 3, std::fmin(std::fmax(v, 0.0), 1.0), v, v * M_PI};
    CHECK_MSG(max_rel_error(&out[k * i], want, k) < 1e-6, "x = %g", v);
  }
}

TEST(concurrent_launches_from_two_os_threads) {
  auto worker = [](unsigned seed, bool* ok) {
    const int B = 6, n = 777;
    const std::vector<float> x = random_floats(B * n, seed);
    const std::vector<double> want = row_sums(x, B, n);
    *ok = true;
    for (int rep = 0; rep < 15; ++rep) {
      std::vector<float> out(B, 0.0f), pairs(2 * B, 0.0f);
      *ok &= launch(emu_launch_reduce_tree, dim3(B), dim3(256), 0, out.data(), x.data(), n) == EMU_OK;
      *ok &= launch(emu_launch_reduce_warps, dim3(B), dim3(64), 0, pairs.data(), x.data(), n) == EMU_OK;
      *ok &= max_rel_error(out.data(), want.data(), B) < 1e-5;
      for (int b = 0; b < B; ++b) *ok &= std::fabs(pairs[2 * b] - want[b]) < 1e-4;
    }
  };
  bool ok1 = false, ok2 = false;
  std::thread t1(worker, 11u, &ok1), t2(worker, 12u, &ok2);
  t1.join();
  t2.join();
  CHECK(ok1 && ok2);
}

TEST(context_switch_rate) {
  const int threads = 256, iterations = 2000;
  int counter = 0;
  const auto start = std::chrono::steady_clock::now();
  CHECK(launch(emu_launch_barrier_loop, dim3(1), dim3(threads), 0, &counter, iterations) == EMU_OK);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(counter == iterations);
  // Every barrier arrival is one switch into a fiber and one back to the scheduler.
  const double switches = 2.0 * threads * (iterations + 1);
  std::printf("    %.2f M context switches/s (%.0f in %.3f s)\n", switches / seconds / 1e6, switches, seconds);
}

}  // namespace
