// __half and __nv_bfloat16 against a brute-force reference.
//
// The reference knows nothing about bit tricks: it decodes every one of the 2^16 patterns to
// its exact value, and rounds a number by searching that sorted table for the nearest value,
// breaking ties toward the even pattern. Past the largest finite value the table holds one more
// entry, 2^(emax+1), whose pattern is Inf: that is exactly where round-to-nearest-even
// overflows. Sums, products and quotients are formed exactly (or, for division, rounded once
// at 113 bits, which cannot change the final rounding) in __float128.
#include <algorithm>
#include <random>

#include "harness.h"

namespace {

struct Format {
  const char* name;
  int mant_bits, exp_bits;
  unsigned short inf, nan;
};
constexpr Format kHalf{"half", 10, 5, 0x7c00, 0x7fff};
constexpr Format kBf16{"bf16", 7, 8, 0x7f80, 0x7fff};

// The exact value of a non-negative pattern (NaN patterns excluded).
double decode(const Format& f, unsigned bits) {
  const unsigned mant = bits & ((1u << f.mant_bits) - 1);
  const unsigned exp = (bits >> f.mant_bits) & ((1u << f.exp_bits) - 1);
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  if (exp == (1u << f.exp_bits) - 1) return INFINITY;
  if (exp == 0) return std::ldexp(mant, 1 - bias - f.mant_bits);
  return std::ldexp(mant + (1u << f.mant_bits), static_cast<int>(exp) - bias - f.mant_bits);
}

struct Table {
  Format f;
  std::vector<double> values;  // values[p] for every finite positive pattern p, then 2^(emax+1)

  explicit Table(const Format& fmt) : f(fmt) {
    for (unsigned p = 0; p < f.inf; ++p) values.push_back(decode(f, p));
    const int emax = (1 << (f.exp_bits - 1)) - 1;
    values.push_back(std::ldexp(1.0, emax + 1));
  }

  template <class Real>
  unsigned short nearest(Real x) const {
    const unsigned short sign = x < 0 || (x == 0 && std::signbit(static_cast<double>(x))) ? 0x8000 : 0;
    const Real a = x < 0 ? -x : x;
    if (a >= static_cast<Real>(values.back())) return sign | f.inf;
    // First entry greater than a; the answer is it or the one before.
    size_t lo = 0, hi = values.size() - 1;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (static_cast<Real>(values[mid]) > a) hi = mid; else lo = mid + 1;
    }
    const size_t below = hi - 1;
    const Real d_lo = a - static_cast<Real>(values[below]);
    const Real d_hi = static_cast<Real>(values[hi]) - a;
    size_t pick = d_lo < d_hi ? below : d_hi < d_lo ? hi : (below % 2 == 0 ? below : hi);
    return static_cast<unsigned short>(sign | pick);
  }
};

unsigned float_bits(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
float bits_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }

template <class T> unsigned short bits(T h) { return emu::detail::bits_of(h); }
template <class T> T of_bits(unsigned short b) { return emu::detail::of_bits<T>(b); }

// Checks float -> T against the table at x and -x.
template <class T>
void check_round(const Table& t, float x) {
  for (float v : {x, -x}) {
    const unsigned short want = std::isnan(v) ? t.f.nan : t.nearest<double>(v);
    const unsigned short got = bits(T(v));
    CHECK_MSG(got == want, "%s(%a = 0x%08x) = 0x%04x, want 0x%04x", t.f.name, v, float_bits(v), got, want);
  }
}

template <class T>
void exhaustive(const Format& f) {
  const Table t(f);
  for (unsigned p = 0; p < 0x10000 && failures() < 20; ++p) {
    const auto h = static_cast<unsigned short>(p);
    const float x = float(of_bits<T>(h));
    const bool is_nan = (h & 0x7fff) > f.inf;
    if (is_nan) {
      CHECK_MSG(std::isnan(x), "%s 0x%04x -> %a", f.name, h, x);
      CHECK_MSG(bits(T(x)) == f.nan, "%s NaN 0x%04x does not round-trip to 0x%04x", f.name, h, f.nan);
      continue;
    }
    const double want = (h & 0x8000 ? -1 : 1) * decode(f, h & 0x7fff);
    CHECK_MSG(x == want && std::signbit(x) == std::signbit(want), "%s 0x%04x -> %a, want %a", f.name, h, x, want);
    CHECK_MSG(bits(T(x)) == h, "%s 0x%04x does not round-trip (got 0x%04x)", f.name, h, bits(T(x)));
  }
  // Every value, every midpoint between neighbours, and the floats just either side of it.
  for (size_t i = 0; i + 1 < t.values.size() && failures() < 20; ++i) {
    const auto mid = static_cast<float>((t.values[i] + t.values[i + 1]) / 2);
    CHECK(static_cast<double>(mid) == (t.values[i] + t.values[i + 1]) / 2);
    for (float x : {static_cast<float>(t.values[i]), mid, std::nextafter(mid, 0.0f),
                    std::nextafter(mid, INFINITY)})
      check_round<T>(t, x);
  }
  for (float x : {0.0f, INFINITY, NAN, FLT_MAX, FLT_MIN, bits_float(1), bits_float(0x7fc00001)})
    check_round<T>(t, x);
  std::mt19937 rng(12345);
  for (int i = 0; i < 2000000 && failures() < 20; ++i) check_round<T>(t, bits_float(rng()));
}

TEST(half_conversions_exhaustive) { exhaustive<__half>(kHalf); }
TEST(bf16_conversions_exhaustive) { exhaustive<__nv_bfloat16>(kBf16); }

// double -> 16-bit must round once, also where rounding through float first would not.
template <class T>
void double_rounding(const Format& f) {
  const Table t(f);
  std::mt19937_64 rng(7);
  for (size_t i = 0; i + 1 < t.values.size() && failures() < 20; i += 7) {
    const double mid = (t.values[i] + t.values[i + 1]) / 2;
    for (double x : {mid, mid * (1 + 0x1p-40), mid * (1 - 0x1p-40), mid + 0x1p-1070}) {
      const unsigned short want = t.nearest<double>(x);
      CHECK_MSG(bits(T(x)) == want, "%s(double %a) = 0x%04x, want 0x%04x", f.name, x, bits(T(x)), want);
    }
  }
  for (int i = 0; i < 200000 && failures() < 20; ++i) {
    const double x = std::ldexp(std::uniform_real_distribution<double>(-2, 2)(rng),
                                static_cast<int>(rng() % 60) - 30);
    CHECK_MSG(bits(T(x)) == t.nearest<double>(x), "%s(double %a)", f.name, x);
  }
  // Integers convert exactly and round once, including beyond 2^53.
  for (long long v : {1LL, 255LL, 257LL, 65519LL, 65520LL, (1LL << 53) + 1, (1LL << 62) + (1LL << 54) + 1}) {
    CHECK_MSG(bits(T(v)) == t.nearest<__float128>(static_cast<__float128>(v)), "%s(%lld)", f.name, v);
  }
}

TEST(half_from_double_rounds_once) { double_rounding<__half>(kHalf); }
TEST(bf16_from_double_rounds_once) { double_rounding<__nv_bfloat16>(kBf16); }

// A random finite value whose exponent keeps exact results within __float128's 113 bits.
template <class T>
T random_value(std::mt19937& rng) {
  for (;;) {
    const T h = of_bits<T>(static_cast<unsigned short>(rng()));
    const float x = float(h);
    if (std::isfinite(x) && (x == 0 || std::fabs(std::log2(std::fabs(x))) < 20)) return h;
  }
}

template <class T>
void arithmetic(const Format& f) {
  const Table t(f);
  std::mt19937 rng(99);
  for (int i = 0; i < 300000 && failures() < 20; ++i) {
    const T a = random_value<T>(rng), b = random_value<T>(rng), c = random_value<T>(rng);
    const __float128 x = float(a), y = float(b), z = float(c);
    const auto expect = [&](const char* op, T got, __float128 exact) {
      const unsigned short want = t.nearest<__float128>(exact);
      CHECK_MSG(bits(got) == want, "%s %s(%a, %a, %a) = 0x%04x, want 0x%04x", f.name, op,
                float(a), float(b), float(c), bits(got), want);
    };
    expect("add", __hadd(a, b), x + y);
    expect("sub", a - b, x - y);
    expect("mul", __hmul(a, b), x * y);
    if (float(b) != 0) expect("div", a / b, x / y);
    expect("fma", __hfma(a, b, c), x * y + z);
  }
}

TEST(half_arithmetic_rounds_correctly) { arithmetic<__half>(kHalf); }
TEST(bf16_arithmetic_rounds_correctly) { arithmetic<__nv_bfloat16>(kBf16); }

TEST(bf16_fma_sees_tiny_addend) {
  // 129/128 * 3/2 lies exactly halfway between two bf16 values; a tiny negative addend must
  // pull it down, though it vanishes when a*b + c is rounded to double.
  const __nv_bfloat16 a(129.0f / 128), b(1.5f), c(-0x1p-100f);
  CHECK_MSG(bits(__hfma(a, b, c)) == 0x3fc1, "got 0x%04x", bits(__hfma(a, b, c)));
  CHECK(bits(__hfma(a, b, __nv_bfloat16(0.0f))) == 0x3fc2);
}

TEST(fp16_intrinsics) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(1.5f, -2.25f);
  CHECK(__low2float(p) == 1.5f && __high2float(p) == -2.25f);
  CHECK(bits(__float2bfloat16_rz(1.0f + 0x1p-8f + 0x1p-9f)) == 0x3f80);
  CHECK(bits(__float2bfloat16(1.0f + 0x1p-8f + 0x1p-9f)) == 0x3f81);
  CHECK(__bfloat16_as_ushort(CUDART_INF_BF16) == 0x7f80);
  CHECK(__hisinf(-CUDART_INF_FP16) == -1 && __hisnan(CUDART_NAN_BF16));
  const float2 f = __half22float2(__floats2half2_rn(0.1f, 65519.0f));
  CHECK(f.x == float(__half(0.1f)) && f.y == 65504.0f);
  CHECK(std::isinf(float(__float2half(65520.0f))));
  const __half2 h = __hadd2(__float2half2_rn(1.0f), __halves2half2(__half(2.0f), __half(3.0f)));
  CHECK(__low2float(h) == 3.0f && __high2float(h) == 4.0f);
  CHECK(float(__hmax(__nv_bfloat16(NAN), __nv_bfloat16(2.0f))) == 2.0f);
  CHECK(float(__habs(__nv_bfloat16(-3.0f))) == 3.0f);
  __nv_bfloat16 acc = 1.0f;
  acc += __nv_bfloat16(0.5f);
  acc *= __nv_bfloat16(2.0f);
  CHECK(float(acc) == 3.0f && acc > __nv_bfloat16(2.0f) && -acc < __nv_bfloat16(0.0f));
  static_assert(std::is_trivially_default_constructible_v<__nv_bfloat16>);
  static_assert(std::is_trivially_copyable_v<__half2> && sizeof(__half2) == 4 && alignof(__half2) == 4);
}

}  // namespace
