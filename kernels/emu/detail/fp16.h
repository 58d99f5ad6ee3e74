// __half / __half2 (cuda_fp16.h) and __nv_bfloat16 / __nv_bfloat162 (cuda_bf16.h).
//
// Every rounding is a single round-to-nearest-even from the exact value, as the sm_80+
// instructions do. Any NaN converts to the canonical 0x7FFF, and a half NaN widens to the
// float 0x7FFFFFFF, matching CUDA's own host implementation of these conversions. The classes
// mirror CUDA's: a protected `__x`, a defaulted default constructor (so `__shared__` arrays
// of them need no constructor), implicit conversions from float/double/integers and to float,
// and hidden-friend operators, so mixed expressions that are ambiguous under NVRTC
// (`bf16 * 2.0f`) are ambiguous here too.
#pragma once

struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };
struct __nv_bfloat16_raw { unsigned short x; };
struct __nv_bfloat162_raw { unsigned short x, y; };

namespace emu::detail {

inline unsigned int float_bits(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }

// Keeps `dropped` (the bits shifted out below `kept`) for a round-to-nearest-even decision.
inline unsigned int round_half_even(unsigned int kept, unsigned int dropped, unsigned int half) {
  return kept + ((dropped > half || (dropped == half && (kept & 1u))) ? 1u : 0u);
}

struct BFloat16Format {
  using raw = __nv_bfloat16_raw;
  static unsigned short from_float(float f) {
    const unsigned int u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    // A carry out of the mantissa correctly bumps the exponent (and reaches Inf at the top).
    return static_cast<unsigned short>(round_half_even(u >> 16, u & 0xffffu, 0x8000u));
  }
  static float to_float(unsigned short h) { return bits_float(static_cast<unsigned int>(h) << 16); }
};

struct HalfFormat {
  using raw = __half_raw;
  static unsigned short from_float(float f) {
    const unsigned int x = float_bits(f);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int u = x & 0x7fffffffu;
    if (u > 0x7f800000u) return 0x7fff;
    if (u >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // >= 65520 -> Inf
    if (u >= 0x38800000u) {  // half normal: rebias the exponent, keep 10 mantissa bits
      const unsigned int r = u - 0x38000000u;
      return static_cast<unsigned short>(sign | round_half_even(r >> 13, r & 0x1fffu, 0x1000u));
    }
    if (u <= 0x33000000u) return static_cast<unsigned short>(sign);  // <= 2^-25 -> 0
    // Half subnormal: count in units of 2^-24.
    const unsigned int shift = 126u - (u >> 23);
    const unsigned int mant = (u & 0x7fffffu) | 0x800000u;
    const unsigned int dropped = mant & ((1u << shift) - 1u);
    return static_cast<unsigned short>(
        sign | round_half_even(mant >> shift, dropped, 1u << (shift - 1u)));
  }
  static float to_float(unsigned short h) {
    const unsigned int sign = (h & 0x8000u) << 16;
    const unsigned int exp = (h >> 10) & 0x1fu;
    const unsigned int mant = h & 0x3ffu;
    if (exp == 0x1fu) return bits_float(mant ? 0x7fffffffu : (sign | 0x7f800000u));
    if (exp == 0) return std::ldexp(static_cast<float>(mant), -24) * (sign ? -1.0f : 1.0f);
    return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  }
};

// Round to odd: truncate, then set the last bit if anything was lost. Rounding a value to odd
// at 24 bits and then to nearest at 8 or 11 bits equals one direct rounding to nearest, which
// makes the double -> float -> 16-bit path a single rounding (CUDA's __double2bfloat16 does
// the same).
inline float double_to_float_odd(double d) {
  float f = static_cast<float>(d);
  if (std::isnan(d) || static_cast<double>(f) == d) return f;
  if (std::isinf(f)) return std::copysign(FLT_MAX, f);
  if ((float_bits(f) & 1u) == 0) f = std::nextafter(f, d > f ? INFINITY : -INFINITY);
  return f;
}

// a*b + c rounded to odd at double precision. a*b is exact in a double for 16-bit inputs, and
// TwoSum recovers the exact rounding error of the addition.
inline double fma_odd(double a, double b, double c) {
  const double p = a * b;
  const double s = p + c;
  if (!std::isfinite(s)) return s;
  const double bp = s - c;
  const double err = (p - bp) + (c - (s - bp));
  if (err == 0.0) return s;
  unsigned long long u;
  std::memcpy(&u, &s, 8);
  return (u & 1u) ? s : std::nextafter(s, err > 0 ? INFINITY : -INFINITY);
}

// Integers convert exactly through __int128 and round to odd at double precision.
inline double int_to_double_odd(__int128 v) {
  const double d = static_cast<double>(v);
  const __int128 err = v - static_cast<__int128>(d);
  unsigned long long u;
  std::memcpy(&u, &d, 8);
  if (err == 0 || (u & 1u)) return d;
  return std::nextafter(d, err > 0 ? INFINITY : -INFINITY);
}

template <class F>
class Float16 {
 public:
  using raw = typename F::raw;

  Float16() = default;
  constexpr Float16(const raw& r) : __x(r.x) {}
  constexpr operator raw() const { return raw{__x}; }
  Float16& operator=(const raw& r) { __x = r.x; return *this; }

  Float16(float f) : __x(F::from_float(f)) {}
  Float16(double d) : __x(F::from_float(double_to_float_odd(d))) {}
  Float16(short v) : Float16(static_cast<long long>(v)) {}
  Float16(unsigned short v) : Float16(static_cast<long long>(v)) {}
  Float16(int v) : Float16(static_cast<long long>(v)) {}
  Float16(unsigned int v) : Float16(static_cast<long long>(v)) {}
  Float16(long long v) : Float16(int_to_double_odd(v)) {}
  Float16(unsigned long long v) : Float16(int_to_double_odd(v)) {}
  operator float() const { return F::to_float(__x); }
  Float16& operator=(float f) { return *this = Float16(f); }
  Float16& operator=(double d) { return *this = Float16(d); }

  static Float16 from_double(double d) { return Float16(d); }

  // A double holds every product exactly, and rounds sums and quotients finely enough
  // (53 >= 2 * 11 + 2 bits) that rounding it once more gives the correctly rounded result.
  friend Float16 operator+(const Float16& a, const Float16& b) { return from_double(double(float(a)) + float(b)); }
  friend Float16 operator-(const Float16& a, const Float16& b) { return from_double(double(float(a)) - float(b)); }
  friend Float16 operator*(const Float16& a, const Float16& b) { return from_double(double(float(a)) * float(b)); }
  friend Float16 operator/(const Float16& a, const Float16& b) { return from_double(double(float(a)) / float(b)); }
  friend Float16& operator+=(Float16& a, const Float16& b) { return a = a + b; }
  friend Float16& operator-=(Float16& a, const Float16& b) { return a = a - b; }
  friend Float16& operator*=(Float16& a, const Float16& b) { return a = a * b; }
  friend Float16& operator/=(Float16& a, const Float16& b) { return a = a / b; }
  friend Float16 operator+(const Float16& a) { return a; }
  friend Float16 operator-(const Float16& a) { return raw{static_cast<unsigned short>(a.__x ^ 0x8000u)}; }
  friend bool operator==(const Float16& a, const Float16& b) { return float(a) == float(b); }
  friend bool operator!=(const Float16& a, const Float16& b) { return float(a) != float(b); }
  friend bool operator<(const Float16& a, const Float16& b) { return float(a) < float(b); }
  friend bool operator>(const Float16& a, const Float16& b) { return float(a) > float(b); }
  friend bool operator<=(const Float16& a, const Float16& b) { return float(a) <= float(b); }
  friend bool operator>=(const Float16& a, const Float16& b) { return float(a) >= float(b); }

 protected:
  unsigned short __x;
};

template <class F>
struct alignas(4) Float16x2 {
  using raw2 = std::conditional_t<std::is_same_v<F, HalfFormat>, __half2_raw, __nv_bfloat162_raw>;
  Float16<F> x, y;

  Float16x2() = default;
  constexpr Float16x2(const Float16<F>& a, const Float16<F>& b) : x(a), y(b) {}
  constexpr Float16x2(const raw2& r)
      : x(typename F::raw{r.x}), y(typename F::raw{r.y}) {}
  constexpr operator raw2() const {
    return raw2{static_cast<typename F::raw>(x).x, static_cast<typename F::raw>(y).x};
  }

  friend Float16x2 operator+(const Float16x2& a, const Float16x2& b) { return {a.x + b.x, a.y + b.y}; }
  friend Float16x2 operator-(const Float16x2& a, const Float16x2& b) { return {a.x - b.x, a.y - b.y}; }
  friend Float16x2 operator*(const Float16x2& a, const Float16x2& b) { return {a.x * b.x, a.y * b.y}; }
  friend Float16x2 operator/(const Float16x2& a, const Float16x2& b) { return {a.x / b.x, a.y / b.y}; }
  friend Float16x2& operator+=(Float16x2& a, const Float16x2& b) { return a = a + b; }
  friend Float16x2& operator-=(Float16x2& a, const Float16x2& b) { return a = a - b; }
  friend Float16x2& operator*=(Float16x2& a, const Float16x2& b) { return a = a * b; }
  friend Float16x2& operator/=(Float16x2& a, const Float16x2& b) { return a = a / b; }
  friend Float16x2 operator-(const Float16x2& a) { return {-a.x, -a.y}; }
  friend bool operator==(const Float16x2& a, const Float16x2& b) { return a.x == b.x && a.y == b.y; }
  friend bool operator!=(const Float16x2& a, const Float16x2& b) { return !(a == b); }
};

template <class T>
unsigned short bits_of(T h) { return static_cast<typename T::raw>(h).x; }
template <class T>
T of_bits(unsigned short b) { return typename T::raw{b}; }

}  // namespace emu::detail

using __half = emu::detail::Float16<emu::detail::HalfFormat>;
using __half2 = emu::detail::Float16x2<emu::detail::HalfFormat>;
using __nv_bfloat16 = emu::detail::Float16<emu::detail::BFloat16Format>;
using __nv_bfloat162 = emu::detail::Float16x2<emu::detail::BFloat16Format>;
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;
using half = __half;
using half2 = __half2;

// Conversions.
inline __half __float2half(float a) { return __half(a); }
inline __half __float2half_rn(float a) { return __half(a); }
inline __half __double2half(double a) { return __half(a); }
inline float __half2float(__half a) { return float(a); }
inline __half2 __float2half2_rn(float a) { return {__half(a), __half(a)}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __half2 __float22half2_rn(float2 a) { return {__half(a.x), __half(a.y)}; }
inline float2 __half22float2(__half2 a) { return {float(a.x), float(a.y)}; }
inline __half2 make_half2(__half x, __half y) { return {x, y}; }

inline __nv_bfloat16 __float2bfloat16(float a) { return __nv_bfloat16(a); }
inline __nv_bfloat16 __float2bfloat16_rn(float a) { return __nv_bfloat16(a); }
inline __nv_bfloat16 __float2bfloat16_rz(float a) {
  const unsigned int u = emu::detail::float_bits(a);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16_raw{0x7fff};
  return __nv_bfloat16_raw{static_cast<unsigned short>(u >> 16)};
}
inline __nv_bfloat16 __double2bfloat16(double a) { return __nv_bfloat16(a); }
inline float __bfloat162float(__nv_bfloat16 a) { return float(a); }
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return {__nv_bfloat16(a), __nv_bfloat16(a)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 a) { return {__nv_bfloat16(a.x), __nv_bfloat16(a.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 a) { return {float(a.x), float(a.y)}; }
inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return {x, y}; }

// Intrinsics that exist with the same name for both formats.
#define EMU_FLOAT16_INTRINSICS(T, T2, NAME)                                                  \
  inline float __low2float(T2 a) { return float(a.x); }                                     \
  inline float __high2float(T2 a) { return float(a.y); }                                    \
  inline T __low2##NAME(T2 a) { return a.x; }                                               \
  inline T __high2##NAME(T2 a) { return a.y; }                                              \
  inline T2 __halves2##NAME##2(T a, T b) { return {a, b}; }                                 \
  inline T2 __##NAME##2##NAME##2(T a) { return {a, a}; }                                    \
  inline T2 __lowhigh2highlow(T2 a) { return {a.y, a.x}; }                                  \
  inline unsigned short __##NAME##_as_ushort(T a) { return emu::detail::bits_of(a); }       \
  inline short __##NAME##_as_short(T a) { return static_cast<short>(emu::detail::bits_of(a)); } \
  inline T __ushort_as_##NAME(unsigned short b) { return emu::detail::of_bits<T>(b); } \
  inline T __short_as_##NAME(short b) {                                                     \
    return emu::detail::of_bits<T>(static_cast<unsigned short>(b));                 \
  }                                                                                         \
  inline T __hadd(T a, T b) { return a + b; }                                               \
  inline T __hsub(T a, T b) { return a - b; }                                               \
  inline T __hmul(T a, T b) { return a * b; }                                               \
  inline T __hdiv(T a, T b) { return a / b; }                                               \
  inline T __hneg(T a) { return -a; }                                                       \
  inline T __habs(T a) { return emu::detail::of_bits<T>(emu::detail::bits_of(a) & 0x7fffu); } \
  inline T __hfma(T a, T b, T c) {                                                          \
    return T(emu::detail::fma_odd(float(a), float(b), float(c)));                           \
  }                                                                                         \
  inline T __hmax(T a, T b) { return T(std::fmax(float(a), float(b))); }                   \
  inline T __hmin(T a, T b) { return T(std::fmin(float(a), float(b))); }                   \
  inline bool __heq(T a, T b) { return a == b; }                                            \
  inline bool __hne(T a, T b) { return a != b; }                                            \
  inline bool __hlt(T a, T b) { return a < b; }                                             \
  inline bool __hle(T a, T b) { return a <= b; }                                            \
  inline bool __hgt(T a, T b) { return a > b; }                                             \
  inline bool __hge(T a, T b) { return a >= b; }                                            \
  inline int __hisnan(T a) { return std::isnan(float(a)); }                                 \
  inline int __hisinf(T a) { return std::isinf(float(a)) ? (float(a) > 0 ? 1 : -1) : 0; }  \
  inline T2 __hadd2(T2 a, T2 b) { return a + b; }                                           \
  inline T2 __hsub2(T2 a, T2 b) { return a - b; }                                           \
  inline T2 __hmul2(T2 a, T2 b) { return a * b; }                                           \
  inline T2 __h2div(T2 a, T2 b) { return a / b; }                                           \
  inline T2 __hneg2(T2 a) { return -a; }                                                    \
  inline T2 __habs2(T2 a) { return {__habs(a.x), __habs(a.y)}; }                            \
  inline T2 __hfma2(T2 a, T2 b, T2 c) { return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; } \
  inline T2 __hmax2(T2 a, T2 b) { return {__hmax(a.x, b.x), __hmax(a.y, b.y)}; }            \
  inline T2 __hmin2(T2 a, T2 b) { return {__hmin(a.x, b.x), __hmin(a.y, b.y)}; }

EMU_FLOAT16_INTRINSICS(__half, __half2, half)
EMU_FLOAT16_INTRINSICS(__nv_bfloat16, __nv_bfloat162, bfloat16)
#undef EMU_FLOAT16_INTRINSICS
