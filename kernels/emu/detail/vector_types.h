// CUDA's built-in vector types (vector_types.h) and their make_* helpers.
//
// They stay plain aggregates with CUDA's alignments, so `__shared__ float4 t[64];` has no
// constructor to run and float4 loads see the same layout as on the device.
#pragma once

#define EMU_VEC1(T, name, align) \
  struct alignas(align) name { T x; }; \
  inline constexpr name make_##name(T x) { return name{x}; }
#define EMU_VEC2(T, name, align) \
  struct alignas(align) name { T x, y; }; \
  inline constexpr name make_##name(T x, T y) { return name{x, y}; }
#define EMU_VEC3(T, name, align) \
  struct alignas(align) name { T x, y, z; }; \
  inline constexpr name make_##name(T x, T y, T z) { return name{x, y, z}; }
#define EMU_VEC4(T, name, align) \
  struct alignas(align) name { T x, y, z, w; }; \
  inline constexpr name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }

EMU_VEC1(signed char, char1, 1)
EMU_VEC2(signed char, char2, 2)
EMU_VEC4(signed char, char4, 4)
EMU_VEC1(unsigned char, uchar1, 1)
EMU_VEC2(unsigned char, uchar2, 2)
EMU_VEC4(unsigned char, uchar4, 4)
EMU_VEC1(short, short1, 2)
EMU_VEC2(short, short2, 4)
EMU_VEC4(short, short4, 8)
EMU_VEC1(unsigned short, ushort1, 2)
EMU_VEC2(unsigned short, ushort2, 4)
EMU_VEC4(unsigned short, ushort4, 8)
EMU_VEC1(int, int1, 4)
EMU_VEC2(int, int2, 8)
EMU_VEC3(int, int3, 4)
EMU_VEC4(int, int4, 16)
EMU_VEC1(unsigned int, uint1, 4)
EMU_VEC2(unsigned int, uint2, 8)
EMU_VEC3(unsigned int, uint3, 4)
EMU_VEC4(unsigned int, uint4, 16)
EMU_VEC1(long long, longlong1, 8)
EMU_VEC2(long long, longlong2, 16)
EMU_VEC1(unsigned long long, ulonglong1, 8)
EMU_VEC2(unsigned long long, ulonglong2, 16)
EMU_VEC1(float, float1, 4)
EMU_VEC2(float, float2, 8)
EMU_VEC3(float, float3, 4)
EMU_VEC4(float, float4, 16)
EMU_VEC1(double, double1, 8)
EMU_VEC2(double, double2, 16)

#undef EMU_VEC1
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
