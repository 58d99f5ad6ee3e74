// nvcuda::wmma (mma.h): warp-level 16x16x16 matrix products on the emulator.
//
// Provided: fragment<matrix_a|matrix_b, 16, 16, 16, __nv_bfloat16|__half, row_major|col_major>,
// fragment<accumulator, 16, 16, 16, float|__half>, fill_fragment, load_matrix_sync,
// store_matrix_sync and mma_sync (every a/b layout pair; bf16 inputs accumulate in float, half
// inputs in float or half), with CUDA's element counts: 8 per lane for bf16 a/b fragments and
// for accumulators, 16 for half a/b fragments (each element held twice, as on the device).
//
// Element mapping. The device's mapping of matrix elements to lanes is unspecified, so portable
// code may only apply the same operation to every x[i] or learn the mapping at run time (load a
// matrix of known values). The emulator picks one on purpose unlike row-major and different for
// a, b and accumulators, so code that guesses the mapping gets wrong numbers here. Element i of
// lane l holds the matrix entry (q / 16, q % 16) with
//     p = (l + 32 i) mod 256,   q = (p * M + A) mod 256
// where (M, A) = (37, 11) for matrix_a (row m, column k), (73, 5) for matrix_b (row k, column n)
// and (181, 29) for accumulators (row m, column n). M is odd, so every entry is held exactly
// once per 256 slots (twice by a 16-element half fragment: x[i] and x[i + 8]).
//
// Synchronisation. The three *_sync functions are warp rendezvous of all 32 lanes (mask
// 0xffffffff): every lane must call the same function (mismatches, a partial warp or an exited
// lane fail the launch, as for shuffles). The emulator is as strict as the hardware allows:
//  - load_matrix_sync reads the lane's own elements when the lane arrives, then waits for the
//    others: shared memory written by other lanes must be ordered by __syncwarp() (or a block
//    barrier) before the load;
//  - store_matrix_sync waits for every lane, then writes the lane's own elements and returns:
//    reading elements that other lanes stored needs __syncwarp() first;
//  - mma_sync gathers the lanes' a and b fragments into a per-warp scratch, waits, computes
//    the lane's own d elements, and waits again before any lane may change its fragments.
// Products of 16-bit inputs are exact in double; d = c + sum over k is summed in double and
// rounded once to the accumulator type. Pointers must be 32-byte aligned and ldm a multiple of
// 16 bytes (8 elements of 16 bits, 4 floats), as CUDA requires; otherwise the launch fails.
#pragma once

namespace nvcuda::wmma {
struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
}  // namespace nvcuda::wmma

namespace emu::detail {

// Reports a kernel error from device code: the launch fails with `status` and `message`
// (implemented in runtime.cpp).
[[noreturn]] void device_error(int status, const char* message);

namespace wmma_impl {

struct Map {
  unsigned mult, add;
};
constexpr Map kMapA{37, 11};
constexpr Map kMapB{73, 5};
constexpr Map kMapAcc{181, 29};

// The (row, column) of element i of `lane`.
inline void position(Map map, unsigned lane, int i, int& row, int& col) {
  const unsigned p = (lane + 32u * static_cast<unsigned>(i)) & 255u;
  const unsigned q = (p * map.mult + map.add) & 255u;
  row = static_cast<int>(q >> 4);
  col = static_cast<int>(q & 15u);
}

template <class Use> struct UseMap;
template <> struct UseMap<nvcuda::wmma::matrix_a> { static constexpr Map map = kMapA; };
template <> struct UseMap<nvcuda::wmma::matrix_b> { static constexpr Map map = kMapB; };
template <class Layout> struct IsColMajor;
template <> struct IsColMajor<nvcuda::wmma::row_major> { static constexpr bool value = false; };
template <> struct IsColMajor<nvcuda::wmma::col_major> { static constexpr bool value = true; };

inline unsigned linear_thread() {
  return threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
}

// One warp's gathered a and b matrices for mma_sync. Blocks of one engine run one after
// another on one OS thread, and an OS thread runs one engine at a time, so a thread-local
// table with one slot per warp of the largest block is enough.
struct Scratch {
  double a[16][16];
  double b[16][16];
};
inline Scratch& scratch(unsigned warp) {
  static thread_local Scratch slots[32];
  return slots[warp];
}

inline void check_pointer(const void* p, unsigned ldm, size_t elem_bytes, const char* fn,
                          const char* file, int line) {
  char msg[256];
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    std::snprintf(msg, sizeof msg, "%s at %s:%d: pointer %p is not 32-byte aligned", fn, file,
                  line, p);
    device_error(EMU_ERROR_WARP, msg);
  }
  if ((ldm * elem_bytes) % 16 != 0) {
    std::snprintf(msg, sizeof msg,
                  "%s at %s:%d: ldm %u is not a multiple of 16 bytes (%zu-byte elements)", fn,
                  file, line, ldm, elem_bytes);
    device_error(EMU_ERROR_WARP, msg);
  }
}

inline void rendezvous(WarpKind kind, const char* fn, const char* file, int line) {
  warp_value(kind, 0xffffffffu, 0, fn, file, line);
}

}  // namespace wmma_impl
}  // namespace emu::detail

namespace nvcuda {
namespace wmma {

enum layout_t { mem_row_major, mem_col_major };

template <typename T, int size>
struct __align__(8) __frag_base {
  enum { num_elements = size };
  enum { num_storage_elements = size };
  typedef T element_type;
  typedef T storage_element_type;
  T x[size];
};

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
class fragment;

template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_a, 16, 16, 16, __half, row_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_a, 16, 16, 16, __half, col_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_b, 16, 16, 16, __half, row_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_b, 16, 16, 16, __half, col_major> : public __frag_base<__half, 16> {};
template <> class fragment<accumulator, 16, 16, 16, float> : public __frag_base<float, 8> {};
template <> class fragment<accumulator, 16, 16, 16, __half> : public __frag_base<__half, 8> {};

template <typename T, int size>
inline void fill_fragment(__frag_base<T, size>& f, const T& v) {
  for (int i = 0; i < size; ++i) f.x[i] = v;
}

// a or b fragment: the 16x16 matrix at p, row r and column c at p[r*ldm + c] (row_major) or
// p[c*ldm + r] (col_major).
template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& a, const T* p, unsigned ldm,
                             const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  namespace impl = emu::detail::wmma_impl;
  impl::check_pointer(p, ldm, sizeof(T), "wmma::load_matrix_sync", file, line);
  const unsigned lane = impl::linear_thread() % 32;
  for (int i = 0; i < a.num_elements; ++i) {
    int r, c;
    impl::position(impl::UseMap<Use>::map, lane, i, r, c);
    a.x[i] = impl::IsColMajor<Layout>::value ? p[static_cast<size_t>(c) * ldm + r]
                                               : p[static_cast<size_t>(r) * ldm + c];
  }
  impl::rendezvous(emu::detail::WarpKind::WmmaLoad, "wmma::load_matrix_sync", file, line);
}

template <typename T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& a, const T* p, unsigned ldm,
                             layout_t layout, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  namespace impl = emu::detail::wmma_impl;
  impl::check_pointer(p, ldm, sizeof(T), "wmma::load_matrix_sync", file, line);
  const unsigned lane = impl::linear_thread() % 32;
  for (int i = 0; i < a.num_elements; ++i) {
    int r, c;
    impl::position(impl::kMapAcc, lane, i, r, c);
    a.x[i] = layout == mem_col_major ? p[static_cast<size_t>(c) * ldm + r]
                                     : p[static_cast<size_t>(r) * ldm + c];
  }
  impl::rendezvous(emu::detail::WarpKind::WmmaLoad, "wmma::load_matrix_sync", file, line);
}

template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& a, unsigned ldm,
                              layout_t layout, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  namespace impl = emu::detail::wmma_impl;
  impl::check_pointer(p, ldm, sizeof(T), "wmma::store_matrix_sync", file, line);
  impl::rendezvous(emu::detail::WarpKind::WmmaStore, "wmma::store_matrix_sync", file, line);
  const unsigned lane = impl::linear_thread() % 32;
  for (int i = 0; i < a.num_elements; ++i) {
    int r, c;
    impl::position(impl::kMapAcc, lane, i, r, c);
    (layout == mem_col_major ? p[static_cast<size_t>(c) * ldm + r]
                             : p[static_cast<size_t>(r) * ldm + c]) = a.x[i];
  }
}

// d = a * b + c; d may be c.
template <typename TIn, typename LayoutA, typename LayoutB, typename TAcc, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TAcc>& d,
                     const fragment<matrix_a, 16, 16, 16, TIn, LayoutA>& a,
                     const fragment<matrix_b, 16, 16, 16, TIn, LayoutB>& b,
                     const fragment<accumulator, 16, 16, 16, TC>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(std::is_same_v<TIn, __half> || (std::is_same_v<TAcc, float> && std::is_same_v<TC, float>),
                "bf16 inputs accumulate in float");
  namespace impl = emu::detail::wmma_impl;
  const unsigned t = impl::linear_thread(), lane = t % 32;
  impl::Scratch& s = impl::scratch(t / 32);
  for (int i = 0; i < a.num_elements; ++i) {
    int r, k;
    impl::position(impl::kMapA, lane, i, r, k);
    s.a[r][k] = static_cast<float>(a.x[i]);
  }
  for (int i = 0; i < b.num_elements; ++i) {
    int k, col;
    impl::position(impl::kMapB, lane, i, k, col);
    s.b[k][col] = static_cast<float>(b.x[i]);
  }
  impl::rendezvous(emu::detail::WarpKind::WmmaMma, "wmma::mma_sync", file, line);
  for (int i = 0; i < d.num_elements; ++i) {
    int r, col;
    impl::position(impl::kMapAcc, lane, i, r, col);
    double sum = static_cast<float>(c.x[i]);
    for (int k = 0; k < 16; ++k) sum += s.a[r][k] * s.b[k][col];
    d.x[i] = TAcc(sum);  // one rounding, to nearest even
  }
  // No lane may overwrite the scratch (its next mma_sync) before every lane has read it.
  impl::rendezvous(emu::detail::WarpKind::WmmaMma, "wmma::mma_sync", file, line);
}

}  // namespace wmma
}  // namespace nvcuda
