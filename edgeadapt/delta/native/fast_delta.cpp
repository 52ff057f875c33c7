// Fused CPU kernels of the fast delta runtime (edgeadapt/delta/fast_runtime.py).
//
// DeltaCNN (Parger et al., CVPR 2022) in spirit: each layer gets the list of pixels whose
// input changed plus their channel rows, accumulates W·Δ into a channels-last accumulator
// with dense inner loops over output channels (one vector FMA per weight row), and hands the
// next layer the list of pixels whose quantised output changed. Nothing scans a full map
// except the camera frame itself. Delta rows are int16 (new k - old k, in [-255, 255]).
//
// At 240×320 a frame's state (accumulators and k maps: ~70 MB for ResNet-20; delta rows)
// does not fit in the caches, so the kernels prefetch what they will read next (the next output
// row's accumulators and k map, the delta rows a few pixels ahead) and keep the constants
// and accumulators of 16-, 32- and 64-channel layers in registers (AVX-512 instances).
//
// Exactness: every value is an integer held in float32. Activations are quantiser steps k,
// weights are integers scaled so that sum |w|·k_max <= 2^23 per output channel
// (fast_plan.py), so every partial sum, in any order, is an integer below 2^24 and float32
// represents it exactly: the accumulated state equals the dense accumulation bit for bit.
// The per-pixel epilogue (scale, bias, shortcut, ReLU, requantise) is plain IEEE float32
// in the same operation order as the PyTorch reference; this file is built with
// -ffp-contract=off so the compiler cannot fuse it into FMAs the reference does not do.
// Plain C ABI (loaded with ctypes): no Python or torch headers, builds in about a second.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

typedef float vf16 __attribute__((vector_size(64)));  // 16 floats: one AVX-512 register

// The accumulators' vector: a 16-channel chunk in one AVX-512 register. Without AVX-512 it is
// done in halves of 8: nine 16-lane accumulators would need 18 of AVX2's 16 registers, and
// the spills made the AVX2 build about 9x slower than the AVX-512 one.
typedef float vf8 __attribute__((vector_size(32)));
#ifdef __AVX512F__
typedef vf16 vacc;
#else
typedef vf8 vacc;
#endif
constexpr int kAccLanes = sizeof(vacc) / sizeof(float);

template <class V>
inline V loadv(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class V>
inline void storev(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// 8 activations of a uint8 k map as floats.
inline vf8 load8u8(const uint8_t* p) {
#ifdef __AVX2__
  const __m256 f = _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  vf8 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
#else
  vf8 v;
  for (int l = 0; l < 8; ++l) v[l] = static_cast<float>(p[l]);
  return v;
#endif
}

// Write k (8 integers in [0, 255] held as floats) where dv is non-zero; true if any was.
inline bool store8_changed(uint8_t* p, vf8 k, vf8 dv) {
#ifdef __AVX2__
  __m256 kk, dd;
  std::memcpy(&kk, &k, sizeof kk);
  std::memcpy(&dd, &dv, sizeof dd);
  const __m256i moved = _mm256_castps_si256(_mm256_cmp_ps(dd, _mm256_setzero_ps(), _CMP_NEQ_UQ));
  const __m256i k32 = _mm256_cvttps_epi32(kk);
  const __m128i k16 =
      _mm_packus_epi32(_mm256_castsi256_si128(k32), _mm256_extracti128_si256(k32, 1));
  const __m128i m16 =
      _mm_packs_epi32(_mm256_castsi256_si128(moved), _mm256_extracti128_si256(moved, 1));
  const __m128i old = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i out = _mm_blendv_epi8(old, _mm_packus_epi16(k16, k16), _mm_packs_epi16(m16, m16));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), out);
  return _mm256_movemask_ps(_mm256_castsi256_ps(moved)) != 0;
#else
  bool any = false;
  for (int l = 0; l < 8; ++l) {
    if (dv[l] != 0.0f) {
      p[l] = static_cast<uint8_t>(k[l]);
      any = true;
    }
  }
  return any;
#endif
}

// 8 deltas (integers in [-255, 255] held as floats) as int16.
inline void store8i16(int16_t* p, vf8 dv) {
#ifdef __AVX2__
  __m256 dd;
  std::memcpy(&dd, &dv, sizeof dd);
  const __m256i d32 = _mm256_cvttps_epi32(dd);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packs_epi32(_mm256_castsi256_si128(d32), _mm256_extracti128_si256(d32, 1)));
#else
  for (int l = 0; l < 8; ++l) p[l] = static_cast<int16_t>(dv[l]);
#endif
}

#ifdef __AVX512F__
// 16 deltas as int16 (see store8i16).
inline void store16i16(int16_t* p, vf16 dv) {
  __m512 dd;
  std::memcpy(&dd, &dv, sizeof dd);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtepi32_epi16(_mm512_cvttps_epi32(dd)));
}

// 16-lane uint8 helpers of the AVX-512 epilogue (other builds use load8u8/store8_changed).
typedef uint8_t vu16 __attribute__((vector_size(16)));  // 16 activations of a uint8 k map
typedef int32_t vi16 __attribute__((vector_size(64)));

// The widening load is spelled with intrinsics: GCC 12 lowered the generic vector conversion
// to 16 byte extracts and inserts (most of the epilogue's time).
inline vf16 load16u8(const uint8_t* p) {
  const __m512 f = _mm512_cvtepi32_ps(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  vf16 v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

// Narrowing goes through int32: a direct float -> uint8 vector conversion compiles to
// per-lane extracts, through int32 to one narrowing instruction.
inline vu16 to_u8(vf16 v) {  // v holds integers in [0, 255]
  return __builtin_convertvector(__builtin_convertvector(v, vi16), vu16);
}

// Store the lanes of k whose `where` lane is set (all-ones); leave the others untouched.
inline void store_u8_where(uint8_t* p, vu16 k, vi16 where) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  __m128i kk;
  std::memcpy(&kk, &k, sizeof kk);
  __m512i w;
  std::memcpy(&w, &where, sizeof w);
  _mm_mask_storeu_epi8(p, _mm512_test_epi32_mask(w, w), kk);
#else  // AVX-512F without byte masks (Xeon Phi)
  vu16 old;
  std::memcpy(&old, p, sizeof old);
  const vu16 sel = __builtin_convertvector(where, vu16);  // 0xff where set
  const vu16 out = (k & sel) | (old & ~sel);
  std::memcpy(p, &out, sizeof out);
#endif
}

inline bool any_lane(vi16 m) {
  __m512i w;
  std::memcpy(&w, &m, sizeof w);
  return _mm512_test_epi32_mask(w, w) != 0;
}

// The epilogue's tail for 16 channels, from v = acc·scale + bias [+ shortcut]:
// k = min(round(max(v, 0)·inv_step), kmax); writes k - old k to d and k over the old k in km
// (only the lanes that changed: a staging buffer read back through narrower loads stalled
// store-to-load forwarding). Returns the lanes that changed.
inline vi16 requantise16(vf16 v, vf16 inv_step, vf16 vmax, uint8_t* km, int16_t* d) {
  const vf16 zero = {}, magic = zero + 8388608.0f;
  v = v > zero ? v : zero;
  v = v * inv_step;
  // Round half to even: exact for 0 <= v < 2^23; larger v clamp to kmax either way.
  v = (v + magic) - magic;
  v = v < vmax ? v : vmax;
  const vf16 dv = v - load16u8(km);
  store16i16(d, dv);
  const vi16 lane_moved = dv != zero;
  store_u8_where(km, to_u8(v), lane_moved);
  return lane_moved;
}
#endif


// Division of pixel indices by a fixed map width without a hardware divide (~25 cycles):
// floor(q / w) = (q · ceil(2^40 / w)) >> 40, exact while q · w < 2^40 (checked by callers:
// maps up to a few thousand pixels a side).
struct RowDiv {
  uint64_t m;
  int64_t w;
  explicit RowDiv(int64_t width) : m(((uint64_t{1} << 40) + width - 1) / width), w(width) {}
  int64_t row(int64_t q) const { return static_cast<int64_t>((uint64_t(q) * m) >> 40); }
};


constexpr int kMaxChannels = 4096;

// The delta rows a layer reads were written by the layer before, a megabyte or more ago: out
// of L1 and L2 by the time they are read, and the hardware prefetcher did not hide it (a
// third of the conv's own time was that load). Fetched this many pixels ahead.
constexpr int64_t kAhead = 24;

// Prefetch the cache line `bytes` past `base` (RW = 1: to be written). Computed as an
// integer: the address may lie past the end of its buffer (the last row's next row), which
// prefetching allows but pointer arithmetic would not.
template <int RW = 1>
inline void prefetch_at(const void* base, int64_t bytes) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(bytes);
  __builtin_prefetch(reinterpret_cast<const void*>(at), RW, 3);
}

// The delta row of pixel q + kAhead (rows of c int16).
inline void prefetch_rows(const int16_t* din, int64_t q, int64_t c) {
  for (int64_t i = 0; i < c; i += 32) prefetch_at<0>(din, ((q + kAhead) * c + i) * 2);
}

// Non-zero entries of one pixel's delta row (branch-free: most rows are a few percent full,
// and a branch per channel mispredicts). AVX-512: 16 channels per compress instruction,
// compressed into a register and stored whole: `idx` and `val` need 16 slots beyond `c`.
// (The compress-to-memory form is microcoded on AMD Zen 4: perf showed it as most of each
// conv's time on the shared clips.)
inline int nonzeros(const int16_t* d, int64_t c, int* idx, float* val) {
  int nz = 0;
  int64_t i = 0;
#ifdef __AVX512F__
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= c; i += 16) {
    const __m512 v = _mm512_cvtepi32_ps(
        _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + i))));
    const __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    _mm512_storeu_ps(val + nz, _mm512_maskz_compress_ps(m, v));
    _mm512_storeu_si512(idx + nz, _mm512_maskz_compress_epi32(
                                      m, _mm512_add_epi32(lane, _mm512_set1_epi32(int(i)))));
    nz += __builtin_popcount(m);
  }
#endif
  for (; i < c; ++i) {
    idx[nz] = static_cast<int>(i);
    val[nz] = d[i];
    nz += d[i] != 0;
  }
  return nz;
}

// Output rows of the taps of input pixel (i, j): rows[t] = acc row, or nullptr where the tap
// lands outside the output (padding) or between strided outputs. Returns the valid taps.
// STRIDE is a template argument so the divisions compile to shifts; 0: `stride` at run time.
template <int64_t STRIDE>
inline int tap_rows(int64_t stride, int64_t i, int64_t j, int64_t k, int64_t pad, int64_t ho,
                    int64_t wo, int64_t o, float* acc, float** rows, int64_t* outs) {
  const int64_t s = STRIDE ? STRIDE : stride;
  int valid = 0;
  for (int64_t di = 0; di < k; ++di) {
    const int64_t ti = i + pad - di;
    const bool row_ok = ti >= 0 && ti % s == 0 && ti / s < ho;
    for (int64_t dj = 0; dj < k; ++dj) {
      const int64_t tj = j + pad - dj;
      const int64_t t = di * k + dj;
      if (row_ok && tj >= 0 && tj % s == 0 && tj / s < wo) {
        outs[t] = (ti / s) * wo + tj / s;
        rows[t] = acc + outs[t] * o;
        ++valid;
      } else {
        outs[t] = -1;
        rows[t] = nullptr;
      }
    }
  }
  return valid;
}

inline int tap_rows_any(int64_t stride, int64_t i, int64_t j, int64_t k, int64_t pad, int64_t ho,
                        int64_t wo, int64_t o, float* acc, float** rows, int64_t* outs) {
  if (stride == 1) return tap_rows<1>(1, i, j, k, pad, ho, wo, o, acc, rows, outs);
  if (stride == 2) return tap_rows<2>(2, i, j, k, pad, ho, wo, o, acc, rows, outs);
  return tap_rows<0>(stride, i, j, k, pad, ho, wo, o, acc, rows, outs);
}

// The taps of input pixel (i, j) that land, listed directly: tap (di, dj) lands when
// i + pad - di is a non-negative multiple of the stride below ho·stride (and so for j); the
// landing rows and columns are found on their own (at most ceil(K/stride) each) and
// combined, instead of testing all K·K taps (a 7×7 stride-2 stem tested 49 for its 9-16,
// most of its time). Sets rows[n] (accumulator row), taps[n] (tap index) and the output's
// mask; returns n.
template <int64_t STRIDE>
inline int landing_taps(int64_t stride, int64_t i, int64_t j, int64_t k, int64_t pad,
                        int64_t ho, int64_t wo, int64_t o, float* acc, float** rows, int* taps,
                        uint8_t* mask) {
  const int64_t s = STRIDE ? STRIDE : stride;
  int64_t out_r[7], tap_r[7], out_c[7], tap_c[7];
  int nr = 0, nc = 0;
  const int64_t a = i + pad, b = j + pad;
  for (int64_t d = a % s; d < k && a - d >= 0; d += s) {
    if ((a - d) / s < ho) out_r[nr] = (a - d) / s, tap_r[nr++] = d;
  }
  for (int64_t d = b % s; d < k && b - d >= 0; d += s) {
    if ((b - d) / s < wo) out_c[nc] = (b - d) / s, tap_c[nc++] = d;
  }
  int n = 0;
  for (int r = 0; r < nr; ++r) {
    for (int q = 0; q < nc; ++q) {
      const int64_t out = out_r[r] * wo + out_c[q];
      rows[n] = acc + out * o;
      taps[n++] = static_cast<int>(tap_r[r] * k + tap_c[q]);
      mask[out] = 1;
    }
  }
  return n;
}

inline int landing_taps_any(int64_t stride, int64_t i, int64_t j, int64_t k, int64_t pad,
                            int64_t ho, int64_t wo, int64_t o, float* acc, float** rows,
                            int* taps, uint8_t* mask) {
  if (stride == 1) return landing_taps<1>(1, i, j, k, pad, ho, wo, o, acc, rows, taps, mask);
  if (stride == 2) return landing_taps<2>(2, i, j, k, pad, ho, wo, o, acc, rows, taps, mask);
  return landing_taps<0>(stride, i, j, k, pad, ho, wo, o, acc, rows, taps, mask);
}

// Fused multiply-add is exact here (integer operands and sums below 2^24), so these loops may
// contract even though the file is built with -ffp-contract=off for the epilogue's sake.
#define EA_CONTRACT __attribute__((optimize("fp-contract=fast")))

// The T valid taps at once, 16 output channels at a time: T independent accumulator
// registers per non-zero input element, so the FMAs do not wait on each other. Weights are
// packed (C, O/16, K·K, 16): the tap vectors of one input channel and chunk are contiguous,
// so the inner loop needs one pointer (a pointer per tap would spill registers).
template <int T>
EA_CONTRACT void accumulate_vec(float* const* rows, const int* taps, const float* wpack,
                                int64_t ntaps, int64_t o, int nz, const int* idx,
                                const float* val) {
  const int64_t chunks = o / 16;
  int tap[T];
  for (int t = 0; t < T; ++t) tap[t] = taps[t] * 16;
  for (int64_t part = 0; part < chunks * 16; part += kAccLanes) {
    const int64_t ch = part / 16, in_chunk = part % 16;
    vacc a[T];
    for (int t = 0; t < T; ++t) a[t] = loadv<vacc>(rows[t] + part);
    for (int n = 0; n < nz; ++n) {
      const float v = val[n];
      const float* wp = wpack + (idx[n] * chunks + ch) * ntaps * 16 + in_chunk;
      for (int t = 0; t < T; ++t) a[t] += v * loadv<vacc>(wp + tap[t]);
    }
    for (int t = 0; t < T; ++t) storev(rows[t] + part, a[t]);
  }
}

constexpr int kRunPixels = 64;     // changed pixels of one row taken together at most
constexpr int kRunBuffer = 8192;   // their non-zero entries, buffered

// A run of changed interior pixels of one input row of a stride-1 3×3 conv: input columns
// js[0] < ... < js[len-1], at most one column apart, whose non-zero entries are
// idx/val[off[m], off[m+1]). They land on output rows r0, r0-1, r0-2 (r0 = i + pad) and
// columns js[0] + pad - 2 ... js[len-1] + pad. A window of three output columns slides
// along: each column's accumulator rows are loaded and stored once per run, where a pixel at a
// time loads and stores all nine it reaches (three times the accumulator traffic, most of a
// dense-ish layer's time). Columns between the run's pixels only pass through the window.
EA_CONTRACT void accumulate_run_3x3(float* acc, int64_t wo, int64_t o, int64_t r0, int64_t pad,
                                    const int64_t* js, int len, const int* off, const int* idx,
                                    const float* val, const float* wpack) {
  const int64_t chunks = o / 16, first = js[0] + pad - 2, end = js[len - 1] + pad;
  float* row[3];
  for (int d = 0; d < 3; ++d) row[d] = acc + (r0 - d) * wo * o;
  for (int64_t part = 0; part < chunks * 16; part += kAccLanes) {
    const int64_t ch = part / 16, lane = part, in_chunk = part % 16;
    vacc x0[3], x1[3], x2[3];  // output columns col - 2, col - 1, col (col = j + pad)
    for (int d = 0; d < 3; ++d) {
      x0[d] = loadv<vacc>(row[d] + first * o + lane);
      x1[d] = loadv<vacc>(row[d] + (first + 1) * o + lane);
    }
    int m = 0;
    for (int64_t j = js[0]; j <= js[len - 1]; ++j) {
      const int64_t col = j + pad;
      // The row the next input row opens (its r0): first touched there, so cold (the
      // accumulators of a frame exceed the caches).
      prefetch_at(row[0], ((wo + col) * o + lane) * 4);
      for (int d = 0; d < 3; ++d) x2[d] = loadv<vacc>(row[d] + col * o + lane);
      if (js[m] == j) {
        for (int n = off[m]; n < off[m + 1]; ++n) {
          const float v = val[n];
          // tap (di, dj) at di·3+dj
          const float* wp = wpack + (idx[n] * chunks + ch) * 9 * 16 + in_chunk;
          for (int d = 0; d < 3; ++d) {
            x2[d] += v * loadv<vacc>(wp + (d * 3) * 16);
            x1[d] += v * loadv<vacc>(wp + (d * 3 + 1) * 16);
            x0[d] += v * loadv<vacc>(wp + (d * 3 + 2) * 16);
          }
        }
        ++m;
      }
      for (int d = 0; d < 3; ++d) {  // column col - 2 is complete for this run
        storev(row[d] + (col - 2) * o + lane, x0[d]);
        x0[d] = x1[d];
        x1[d] = x2[d];
      }
    }
    for (int d = 0; d < 3; ++d) {
      storev(row[d] + (end - 1) * o + lane, x0[d]);
      storev(row[d] + end * o + lane, x1[d]);
    }
  }
}

#ifdef __AVX512F__
// accumulate_run_3x3 for O = 16·CH output channels with every chunk in registers at once
// (9·CH accumulators: CH <= 2 fits AVX-512's 32 registers): each entry's value and weight
// address are read once for all chunks, and the column loop runs once instead of once per
// chunk.
template <int CH, int64_t O = CH * 16>
EA_CONTRACT void accumulate_run_3x3_fixed(float* acc, int64_t wo, int64_t r0, int64_t pad,
                                          const int64_t* js, int len, const int* off,
                                          const int* idx, const float* val,
                                          const float* wpack, int64_t h0 = 0) {
  constexpr int64_t o = O;
  const int64_t first = js[0] + pad - 2, end = js[len - 1] + pad;
  float* row[3];
  for (int d = 0; d < 3; ++d) row[d] = acc + (r0 - d) * wo * o + h0 * 16;
  vf16 x0[3][CH], x1[3][CH], x2[3][CH];  // output columns col - 2, col - 1, col
  for (int d = 0; d < 3; ++d) {
    for (int h = 0; h < CH; ++h) {
      x0[d][h] = loadv<vf16>(row[d] + first * o + 16 * h);
      x1[d][h] = loadv<vf16>(row[d] + (first + 1) * o + 16 * h);
    }
  }
  int m = 0;
  for (int64_t j = js[0]; j <= js[len - 1]; ++j) {
    const int64_t col = j + pad;
    for (int h = 0; h < CH; ++h) prefetch_at(row[0], ((wo + col) * o + 16 * h) * 4);
    for (int d = 0; d < 3; ++d) {
      for (int h = 0; h < CH; ++h) x2[d][h] = loadv<vf16>(row[d] + col * o + 16 * h);
    }
    if (js[m] == j) {
      for (int n = off[m]; n < off[m + 1]; ++n) {
        const float v = val[n];
        const float* wp = wpack + (idx[n] * (O / 16) + h0) * (9 * 16);
        for (int h = 0; h < CH; ++h) {
          for (int d = 0; d < 3; ++d) {  // tap (di, dj) at di·3+dj
            x2[d][h] += v * loadv<vf16>(wp + (h * 9 + d * 3) * 16);
            x1[d][h] += v * loadv<vf16>(wp + (h * 9 + d * 3 + 1) * 16);
            x0[d][h] += v * loadv<vf16>(wp + (h * 9 + d * 3 + 2) * 16);
          }
        }
      }
      ++m;
    }
    for (int d = 0; d < 3; ++d) {  // column col - 2 is complete for this run
      for (int h = 0; h < CH; ++h) {
        storev(row[d] + (col - 2) * o + 16 * h, x0[d][h]);
        x0[d][h] = x1[d][h];
        x1[d][h] = x2[d][h];
      }
    }
  }
  for (int d = 0; d < 3; ++d) {
    for (int h = 0; h < CH; ++h) {
      storev(row[d] + (end - 1) * o + 16 * h, x0[d][h]);
      storev(row[d] + end * o + 16 * h, x1[d][h]);
    }
  }
}
#endif

#ifdef __AVX512F__
// A run of changed interior pixels of one input row i of a stride-2, pad-1 3×3 conv with O =
// 16·CH output channels (input columns js[0] < ... < js[len-1], at most two apart; entries as
// accumulate_run_3x3's). Input row i lands on output rows (i+1)/2 and (i-1)/2 with tap rows
// 0 and 2 when odd, on row i/2 with tap row 1 when even (NR rows); output column c takes
// input columns 2c-1, 2c and 2c+1 with tap columns 2, 1 and 0. The run walks its output
// columns, each loaded and stored once, all CH chunks of NR rows in registers, with U partial
// sums so that the FMAs do not wait on each other (a pixel at a time loaded and stored up to
// four columns, and with one or two taps landing its FMAs ran one latency after another).
// Returns the MACs (non-zero entries × taps that land × O).
template <int CH, int NR>
EA_CONTRACT int64_t accumulate_run_s2(float* acc, int64_t wo, int64_t i, const int64_t* js,
                                      int len, const int* off, const int* idx, const float* val,
                                      const float* wpack) {
  constexpr int64_t o = CH * 16;
  constexpr int U = NR * CH >= 4 ? 1 : 4 / (NR * CH);
  float* row[NR];
  int trow[NR];
  for (int a = 0; a < NR; ++a) {
    const int64_t r = NR == 2 ? (i + 1) / 2 - a : i / 2;  // NR == 2: rows (i+1)/2, (i-1)/2
    row[a] = acc + r * wo * o;
    trow[a] = NR == 2 ? 2 * a : 1;
  }
  const int64_t c0 = js[0] >> 1, c1 = (js[len - 1] + 1) >> 1;
  int64_t macs = 0;
  for (int m = 0; m < len; ++m) macs += int64_t(off[m + 1] - off[m]) * NR * (1 + (js[m] & 1));
  int m0 = 0;  // first pixel of the run with column >= 2c - 1
  for (int64_t c = c0; c <= c1; ++c) {
    vf16 y[U][NR][CH];
    for (int a = 0; a < NR; ++a) {
      for (int h = 0; h < CH; ++h) {
        y[0][a][h] = loadv<vf16>(row[a] + c * o + h * 16);
        for (int u = 1; u < U; ++u) y[u][a][h] = vf16{};
      }
    }
    while (m0 < len && js[m0] < 2 * c - 1) ++m0;
    for (int m = m0; m < len && js[m] <= 2 * c + 1; ++m) {
      const int dj = static_cast<int>(js[m] - 2 * c + 1);
      int n = off[m];
      auto add = [&](int u, int nn) {
        const float v = val[nn];
        const float* wp = wpack + idx[nn] * CH * 9 * 16;
        for (int a = 0; a < NR; ++a) {
          for (int h = 0; h < CH; ++h) {
            y[u][a][h] += v * loadv<vf16>(wp + (h * 9 + trow[a] * 3 + dj) * 16);
          }
        }
      };
      for (; n + U <= off[m + 1]; n += U) {
        for (int u = 0; u < U; ++u) add(u, n + u);
      }
      for (; n < off[m + 1]; ++n) add(0, n);
    }
    for (int a = 0; a < NR; ++a) {
      for (int h = 0; h < CH; ++h) {
        for (int u = 1; u < U; ++u) y[0][a][h] += y[u][a][h];
        storev(row[a] + c * o + h * 16, y[0][a][h]);
      }
    }
  }
  return macs * o;
}

// accumulate_run_s2 for this run's rows and chunks; -1 where it has no instance (O not 16,
// 32 or 64: the caller takes the pixels one at a time).
inline int64_t accumulate_run_s2_any(int64_t o, float* acc, int64_t wo, int64_t i,
                                     const int64_t* js, int len, const int* off, const int* idx,
                                     const float* val, const float* wpack) {
  const bool two = i & 1;
#define EA_S2(CH)                                                                         \
  return two ? accumulate_run_s2<CH, 2>(acc, wo, i, js, len, off, idx, val, wpack)        \
             : accumulate_run_s2<CH, 1>(acc, wo, i, js, len, off, idx, val, wpack)
  switch (o) {
    case 16: EA_S2(1);
    case 32: EA_S2(2);
    case 64: EA_S2(4);
    default: return -1;
  }
#undef EA_S2
}
#endif

EA_CONTRACT void accumulate_any(float* const* rows, const int* taps, int nv, const float* wpack,
                                int64_t ntaps, int64_t o, int nz, const int* idx,
                                const float* val) {
  switch (nv) {
    case 1: return accumulate_vec<1>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 2: return accumulate_vec<2>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 3: return accumulate_vec<3>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 4: return accumulate_vec<4>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 5: return accumulate_vec<5>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 6: return accumulate_vec<6>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 7: return accumulate_vec<7>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 8: return accumulate_vec<8>(rows, taps, wpack, ntaps, o, nz, idx, val);
    case 9: return accumulate_vec<9>(rows, taps, wpack, ntaps, o, nz, idx, val);
    default:
      for (int t = 0; t < nv; t += 9) {
        accumulate_any(rows + t, taps + t, std::min(9, nv - t), wpack, ntaps, o, nz, idx, val);
      }
  }
}

EA_CONTRACT void accumulate_scalar(float** rows, int64_t taps, const float* wt, int64_t c, int64_t o, int nz,
                       const int* idx, const float* val) {
  for (int64_t t = 0; t < taps; ++t) {
    if (!rows[t]) continue;
    for (int n = 0; n < nz; ++n) {
      const float v = val[n];
      const float* w = wt + (t * c + idx[n]) * o;
      for (int64_t q = 0; q < o; ++q) rows[t][q] += v * w[q];
    }
  }
}

// Layers whose weights exceed this many bytes accumulate channel-blocked (accumulate_blocked):
// pixel by pixel, each changed pixel would stream all the weight rows of its non-zero
// channels from L3 (9.4 MB for a 512→512 3×3 conv), and ResNet-18's deep layers ran at 13-20
// GMAC/s against 50 for layers whose weights stay in L2.
constexpr int64_t kBlockedWeightBytes = int64_t{1} << 20;
// Weights of one channel group (kept in L2 while every pixel takes its share).
constexpr int64_t kGroupWeightBytes = int64_t{512} << 10;

// acc += conv2d(Δ) for the changed pixels `pin` (ascending), with the loops turned around: the
// input channels in groups whose weights fit in L2, and within a group every pixel's non-zero
// entries of those channels (register-blocked over its taps, as accumulate_vec). Each weight
// is read from memory about once per frame instead of once per pixel using it; the pixels'
// accumulator rows (a few hundred KB in the layers this is for) stay in L2. The sums are
// exact in any order (integers below 2^24), so the result is the same bit for bit. Marks
// every output pixel that received something. Returns the MACs, or -2 for an unordered list.
EA_CONTRACT int64_t accumulate_blocked(const int32_t* pin, const int16_t* din, int64_t np,
                                       int64_t c, int64_t w, int64_t ho, int64_t wo, int64_t k,
                                       int64_t stride, int64_t pad, const float* wpack,
                                       int64_t o, float* acc, uint8_t* mask, const RowDiv& div) {
  const int64_t taps = k * k;
  // Scratch reused across calls and layers (grown, never shrunk): one thread per runtime.
  thread_local std::vector<int> idx, tap;
  thread_local std::vector<float> val;
  thread_local std::vector<float*> rows;
  thread_local std::vector<int64_t> off, cur;
  thread_local std::vector<int> nv;
  if (int64_t(idx.size()) < np * c + 16) {
    idx.resize(np * c + 16);
    val.resize(np * c + 16);
  }
  if (int64_t(rows.size()) < np * taps) {
    rows.resize(np * taps);
    tap.resize(np * taps);
  }
  if (int64_t(off.size()) < np + 1) {
    off.resize(np + 1);
    cur.resize(np + 1);
    nv.resize(np + 1);
  }
  int64_t macs = 0, last = -1, m = 0;  // m: pixels kept (some non-zero, some tap lands)
  off[0] = 0;
  for (int64_t p = 0; p < np; ++p) {
    if (pin[p] <= last) return -2;
    last = pin[p];
    const int64_t i = div.row(pin[p]), j = pin[p] - i * w;
    const int nz = nonzeros(din + p * c, c, idx.data() + off[m], val.data() + off[m]);
    if (!nz) continue;
    const int n = landing_taps_any(stride, i, j, k, pad, ho, wo, o, acc, rows.data() + m * taps,
                                   tap.data() + m * taps, mask);
    if (!n) continue;
    nv[m] = n;
    macs += static_cast<int64_t>(nz) * n * o;
    off[m + 1] = off[m] + nz;
    cur[m] = off[m];
    ++m;
  }
  const int64_t group = std::max<int64_t>(8, kGroupWeightBytes / (o * taps * 4));
  for (int64_t g0 = group; g0 < c + group; g0 += group) {  // channels [g0 - group, g0)
    for (int64_t q = 0; q < m; ++q) {
      int64_t e = cur[q];
      while (e < off[q + 1] && idx[e] < g0) ++e;
      if (e == cur[q]) continue;
      accumulate_any(rows.data() + q * taps, tap.data() + q * taps, nv[q], wpack, taps, o,
                     static_cast<int>(e - cur[q]), idx.data() + cur[q], val.data() + cur[q]);
      cur[q] = e;
    }
  }
  return macs;
}

// The epilogue of one conv (see ea_conv_post): parameters fixed for a layer, run per pixel.
struct Epilogue {
  const float* acc;
  int64_t o;
  const float* scale;
  const float* bias;
  const float* bias_map;
  int64_t border;
  const uint8_t* sck;
  int64_t sc_c, sc_w, sc_stride, sc_front;
  const float* scq;
  int64_t ho, wo;
  const float* inv_step;
  float kmax;
  uint8_t* kmap;
  bool vec, sc_direct;

  // The shortcut's k row read at output pixel q = (i, j), or null without a shortcut.
  const uint8_t* shortcut_at(int64_t q, int64_t i, int64_t j) const {
    if (!sck) return nullptr;
    return sck + (sc_stride == 1 && sc_w == wo ? q : (i * sc_stride) * sc_w + j * sc_stride) * sc_c;
  }

  // Output pixel q of row i, column j: k = min(round(max(v, 0)·(1/q)), kmax) with
  // v = acc·scale + bias [+ shortcut]; writes the delta row to d and k into kmap; true if
  // k changed. `sc` is scratch for a padded shortcut (zero outside its channels).
  bool run(int64_t q, int64_t i, int64_t j, int16_t* d, float* sc, uint8_t* kn) const {
    const float* a = acc + q * o;
    const float* b = bias;
    if (bias_map &&
        (border < 0 || i < border || j < border || i >= ho - border || j >= wo - border)) {
      b = bias_map + q * o;
    }
    const uint8_t* s = shortcut_at(q, i, j);
    if (sck && !sc_direct) {
      for (int64_t c = 0; c < sc_c; ++c) sc[sc_front + c] = static_cast<float>(s[c]) * scq[c];
    }
    uint8_t* km = kmap + q * o;
    if (vec) {
#ifndef __AVX512F__
      return run8(a, b, s, km, d, sc);
#else
      const vf16 vmax = vf16{} + kmax;
      vi16 moved = {};
      for (int64_t c = 0; c < o; c += 16) {
        vf16 v = loadv<vf16>(a + c) * loadv<vf16>(scale + c);
        v = v + loadv<vf16>(b + c);
        if (sc_direct) {
          v = v + load16u8(s + c) * loadv<vf16>(scq + c);
        } else if (sck) {
          v = v + loadv<vf16>(sc + c);
        }
        moved |= requantise16(v, loadv<vf16>(inv_step + c), vmax, km + c, d + c);
      }
      return any_lane(moved);
#endif
    }
    bool changed = false;
    for (int64_t c = 0; c < o; ++c) {
      float v = a[c] * scale[c];
      v = v + b[c];
      if (sck) v = v + sc[c];
      v = v > 0.0f ? v : 0.0f;
      v = std::min(std::nearbyint(v * inv_step[c]), kmax);
      kn[c] = static_cast<uint8_t>(v);
      d[c] = static_cast<int16_t>(v - static_cast<float>(km[c]));
      changed |= kn[c] != km[c];
    }
    if (changed) std::memcpy(km, kn, o);
    return changed;
  }

  // The vector epilogue without AVX-512: the same arithmetic, 8 lanes at a time (16-lane
  // vectors spill AVX2's registers, and GCC lowers their uint8 conversions lane by lane).
  bool run8(const float* a, const float* b, const uint8_t* s, uint8_t* km, int16_t* d,
            const float* sc) const {
    const vf8 zero = {}, magic = zero + 8388608.0f, vmax = zero + kmax;
    bool moved = false;
    for (int64_t c = 0; c < o; c += 8) {
      vf8 v = loadv<vf8>(a + c) * loadv<vf8>(scale + c);
      v = v + loadv<vf8>(b + c);
      if (sc_direct) {
        v = v + load8u8(s + c) * loadv<vf8>(scq + c);
      } else if (sck) {
        v = v + loadv<vf8>(sc + c);
      }
      v = v > zero ? v : zero;
      v = v * loadv<vf8>(inv_step + c);
      v = (v + magic) - magic;  // round half to even, as above
      v = v < vmax ? v : vmax;
      const vf8 dv = v - load8u8(km + c);
      store8i16(d + c, dv);
      moved |= store8_changed(km + c, v, dv);
    }
    return moved;
  }

  // pixel(j) at each marked column j of output row r (every column if `all`), clearing the
  // marks: 64 at a time as a bit mask walked bit by bit (a test per pixel mispredicted on
  // maps half changed), the next row's k map prefetched as it goes.
  template <class F>
  void for_each_marked(int64_t r, bool all, uint8_t* mask, F&& pixel) const {
    const int64_t q0 = r * wo;
    for (int64_t jj = 0; jj < wo; jj += 64) {
      const int64_t len = std::min<int64_t>(64, wo - jj);
      uint64_t bits = len == 64 ? ~uint64_t{0} : (uint64_t{1} << len) - 1;
      if (!all) {
        bits = marked(mask + q0 + jj, len);
        if (!bits) continue;
        std::memset(mask + q0 + jj, 0, len);
      }
      prefetch_next_kmap(q0, jj, len);
      while (bits) {
        const int64_t j = jj + __builtin_ctzll(bits);
        bits &= bits - 1;
        pixel(j);
      }
    }
  }

  // The epilogue at each marked pixel of output row r (every pixel if `all`). Appends the
  // changed ones to pix_out / delta_out from index n (written for every pixel, kept by
  // advancing n: no branch on the outcome either), returns the new n.
  // Not inlined into the conv: that one is built with fp-contract=fast (its integer sums are
  // exact either way), and an FMA here would round differently from the reference.
  __attribute__((noinline)) int64_t finish_row(int64_t r, bool all, uint8_t* mask,
                                               int32_t* pix_out, int16_t* delta_out, int64_t n,
                                               float* sc, uint8_t* kn) const {
    for_each_marked(r, all, mask, [&](int64_t j) {
      const int64_t q = r * wo + j;
      pix_out[n] = static_cast<int32_t>(q);
      n += run(q, r, j, delta_out + n * o, sc, kn);
    });
    return n;
  }

#ifdef __AVX512F__
  // finish_row for O = 16·CH channels, one bias row and no shortcut or one read directly
  // (`fixed`): the per-channel constants stay in registers for the whole row instead of
  // being loaded, and the layer's options tested, at every pixel. Same arithmetic as run(),
  // in the same order.
  template <int CH>
  __attribute__((noinline)) int64_t finish_row_fixed(int64_t r, bool all, uint8_t* mask,
                                                     int32_t* pix_out, int16_t* delta_out,
                                                     int64_t n) const {
    vf16 vs[CH], vb[CH], vq[CH], vsq[CH];
    for (int h = 0; h < CH; ++h) {
      vs[h] = loadv<vf16>(scale + 16 * h);
      vb[h] = loadv<vf16>(bias + 16 * h);
      vq[h] = loadv<vf16>(inv_step + 16 * h);
      vsq[h] = sck ? loadv<vf16>(scq + 16 * h) : vf16{};
    }
    const vf16 vmax = vf16{} + kmax;
    for_each_marked(r, all, mask, [&](int64_t j) {
      const int64_t q = r * wo + j;
      const float* a = acc + q * o;
      uint8_t* km = kmap + q * o;
      int16_t* d = delta_out + n * o;
      const uint8_t* sk = shortcut_at(q, r, j);
      vi16 moved = {};
      for (int h = 0; h < CH; ++h) {
        vf16 v = loadv<vf16>(a + 16 * h) * vs[h];
        v = v + vb[h];
        if (sk) v = v + load16u8(sk + 16 * h) * vsq[h];
        moved |= requantise16(v, vq[h], vmax, km + 16 * h, d + 16 * h);
      }
      pix_out[n] = static_cast<int32_t>(q);
      n += any_lane(moved);
    });
    return n;
  }

  // finish_row through finish_row_fixed where the layer allows it.
  int64_t finish_row_any(int64_t r, bool all, uint8_t* mask, int32_t* pix_out,
                         int16_t* delta_out, int64_t n, float* sc, uint8_t* kn) const {
    if (!bias_map && (!sck || sc_direct)) {
      switch (o) {
        case 16: return finish_row_fixed<1>(r, all, mask, pix_out, delta_out, n);
        case 32: return finish_row_fixed<2>(r, all, mask, pix_out, delta_out, n);
        case 64: return finish_row_fixed<4>(r, all, mask, pix_out, delta_out, n);
        default: break;
      }
    }
    return finish_row(r, all, mask, pix_out, delta_out, n, sc, kn);
  }
#else
  int64_t finish_row_any(int64_t r, bool all, uint8_t* mask, int32_t* pix_out,
                         int16_t* delta_out, int64_t n, float* sc, uint8_t* kn) const {
    return finish_row(r, all, mask, pix_out, delta_out, n, sc, kn);
  }
#endif

  // The k map of the next row's pixels [jj, jj + len), cold (the maps of a frame exceed the
  // caches); the epilogue reads and writes it a row later.
  void prefetch_next_kmap(int64_t q0, int64_t jj, int64_t len) const {
    for (int64_t b = 0; b < len * o; b += 64) prefetch_at(kmap, (q0 + wo + jj) * o + b);
  }

  // Bit b set where mask[b] != 0, for b < len <= 64.
  static uint64_t marked(const uint8_t* mask, int64_t len) {
#if defined(__AVX512BW__)
    const __mmask64 in = len == 64 ? ~__mmask64{0} : (__mmask64{1} << len) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(in, mask);
    return _mm512_test_epi8_mask(v, v);
#else
    uint64_t bits = 0;
    for (int64_t b = 0; b < len; ++b) bits |= uint64_t{mask[b] != 0} << b;
    return bits;
#endif
  }
};

}  // namespace

extern "C" {

// Compare a uint8 channels-last frame with the previous one; list the changed pixels, their
// per-channel deltas (int16) and update `prev`. Returns the number of changed pixels.
// A pixel counts as changed when some channel moved by more than `threshold` levels from the
// value `prev` holds for it; an unchanged pixel keeps its held value (not the new one), so
// small drifts (codec noise) add up until they cross the threshold instead of being lost.
// `prev` is then exactly the frame the network has seen. threshold 0: any change.
int64_t ea_frame_delta_u8(const uint8_t* frame, uint8_t* prev, int64_t npix, int64_t c,
                          int32_t* pix, int16_t* delta, int64_t threshold) {
  int64_t n = 0;
  for (int64_t p = 0; p < npix; ++p) {
    const uint8_t* f = frame + p * c;
    uint8_t* g = prev + p * c;
    if (std::memcmp(f, g, c) == 0) continue;
    if (threshold > 0) {
      int64_t most = 0;
      for (int64_t i = 0; i < c; ++i) {
        const int64_t d = int64_t(f[i]) - int64_t(g[i]);
        most = std::max(most, d < 0 ? -d : d);
      }
      if (most <= threshold) continue;
    }
    for (int64_t i = 0; i < c; ++i) {
      delta[n * c + i] = static_cast<int16_t>(int(f[i]) - int(g[i]));
      g[i] = f[i];
    }
    pix[n++] = static_cast<int32_t>(p);
  }
  return n;
}

}  // extern "C"

namespace {
// conv_impl<true> (ea_conv_post): one conv of the delta runtime, fused with its epilogue:
//   acc += conv2d(Δ) for the P changed input pixels `pin` (ascending) with delta rows
//   `din` (P, C), int16; then at every output pixel that received something or is marked in
//   `mask` (a shortcut's change, ea_mark_shortcut; every pixel if `all`) the epilogue
//   v = acc·scale + bias [+ k_in·q_in of the shortcut]; k = min(round(max(v, 0)·(1/q)), kmax)
// (the order of the PyTorch reference, fast_plan.reference_forward). k maps are uint8
// (kmax <= 255). The pixels whose k changed are listed in `pix_out` (ascending, so the next
// layer can take them as its `pin`) with their delta rows in `delta_out`, their count in
// *count; `kmap` is updated and the marks cleared.
// An output row is finished as soon as the input rows that reach it are done, while its
// accumulator rows are still in cache (a separate pass over a list of touched pixels found
// them evicted, the epilogue then cost 17-70 ns a pixel).
// Weights are laid out (K·K, C, O) in `wt` and packed (C, O/16, K·K, 16) in `wpack`.
// Bias: (O) `bias` for every pixel, except where `bias_map` ((Ho·Wo, O), the stem's) is
// given: pixels less than `border` from an edge read their row of it (all pixels when
// border < 0); the rest, whose rows all equal `bias`, read `bias` (one cached row instead of
// a map-sized stream). Shortcut (`sck` not null): the block input's k map (H_in·W_in, sc_c),
// read at (stride·i, stride·j), channel o - sc_front, scaled by its steps `scq`; channels
// outside it are the zero padding.
// Returns the MACs performed (non-zero input elements × taps that land × O); -1 for more
// than 4096 channels, a kernel over 7×7 or a map too large; -2 if `pin` is not ascending.
template <bool POST>
EA_CONTRACT int64_t conv_impl(
    const int32_t* pin, const int16_t* din, int64_t np, int64_t c, int64_t w, int64_t ho,
    int64_t wo, int64_t k, int64_t stride, int64_t pad, const float* wt, const float* wpack,
    int64_t o, float* acc, uint8_t* mask, int32_t all, const float* scale, const float* bias,
    const float* bias_map, int64_t border, const uint8_t* sck, int64_t sc_c, int64_t sc_w,
    int64_t sc_stride, int64_t sc_front, const float* scq, const float* inv_step, float kmax,
    uint8_t* kmap, int32_t* pix_out, int16_t* delta_out, int64_t* count) {
  *count = 0;
  if (c > kMaxChannels || o > kMaxChannels || k * k > 49) return -1;
  if (sc_front < 0 || sc_front + sc_c > o || kmax > 255.0f || stride < 1) return -1;
  // RowDiv's exactness bound, with the input height bounded by the output's.
  if (double(w) * double(w) * double(ho * stride + k) >= double(uint64_t{1} << 40)) return -1;
  const RowDiv div(w);
  const Epilogue epi{acc, o, scale, bias, bias_map, border, sck, sc_c, sc_w, sc_stride,
                     sc_front, scq, ho, wo, inv_step, kmax, kmap,
                     o % 16 == 0, o % 16 == 0 && sck && sc_front == 0 && sc_c == o};
  alignas(64) uint8_t kn[kMaxChannels];
  alignas(64) float sc[kMaxChannels];
  std::memset(sc, 0, sizeof(float) * o);  // option-A padding channels stay +0
  int64_t n = 0, rows_done = 0;
  auto finish_rows = [&](int64_t upto) {
    for (; rows_done < upto; ++rows_done) {
      n = epi.finish_row_any(rows_done, all, mask, pix_out, delta_out, n, sc, kn);
    }
  };
  int idx[kMaxChannels + 16];  // + 16: nonzeros stores whole vectors
  float val[kMaxChannels + 16];
  float* rows[49];
  int64_t outs[49];
  const int64_t taps = k * k;
  const bool vec = o % 16 == 0;
  int64_t macs = 0, row_seen = -1, last = -1;
  float* vrows[49];
  int vtaps[49];
  int ridx[kRunBuffer + 16], roff[kRunPixels + 1];  // + 16: nonzeros stores whole vectors
  float rval[kRunBuffer + 16];
  int64_t rjs[kRunPixels];
  const bool runs = vec && k == 3 && stride == 1;
#ifdef __AVX512F__
  const bool runs2 = vec && k == 3 && stride == 2 && pad == 1 && (o == 16 || o == 32 || o == 64);
#else
  const bool runs2 = false;
#endif
  if (vec && c * o * taps * 4 > kBlockedWeightBytes) {
    macs = accumulate_blocked(pin, din, np, c, w, ho, wo, k, stride, pad, wpack, o, acc, mask, div);
    if (macs < 0) return macs;
    np = 0;  // accumulated: the loop below only finishes rows
  }
  auto interior = [&](int64_t i, int64_t j) {  // every tap of input pixel (i, j) lands
    if (stride == 2) return i >= 1 && (i + 1) / 2 < ho && j >= 1 && (j + 1) / 2 < wo;
    return i + pad - k + 1 >= 0 && i + pad < ho && j + pad - k + 1 >= 0 && j + pad < wo;
  };
  for (int64_t p = 0, next = 1; p < np; p = next, next = p + 1) {
    if (pin[p] <= last) return -2;
    last = pin[p];
    const int64_t i = div.row(pin[p]), j = pin[p] - i * w;
    if (i != row_seen) {  // output rows whose last input row (r·stride - pad + k - 1) is done
      row_seen = i;
      const int64_t reach = i + pad - k;
      if (POST && reach >= 0) finish_rows(std::min(ho, reach / stride + 1));
    }
    if ((runs || runs2) && interior(i, j)) {  // this pixel and the next ones of its row, as one run
      int len = 0;
      roff[0] = 0;
      for (int64_t q = p; q < np && len < kRunPixels; ++q) {
        const int64_t f = pin[q], jq = f - i * w;
        if (q > p && (f <= last || div.row(f) != i || !interior(i, jq) ||
                      (len && jq - rjs[len - 1] > 2) || roff[len] + c + 16 > kRunBuffer)) {
          if (f <= last) return -2;
          break;
        }
        last = f;
        next = q + 1;
        prefetch_rows(din, q, c);
        const int nz = nonzeros(din + q * c, c, ridx + roff[len], rval + roff[len]);
        if (!nz) continue;
        rjs[len] = jq;
        roff[len + 1] = roff[len] + nz;
        ++len;
      }
      if (!len) continue;
#ifdef __AVX512F__
      if (runs2) {  // stride 2 (pad 1): output rows (i+1)/2 and (i-1)/2 or i/2
        macs += accumulate_run_s2_any(o, acc, wo, i, rjs, len, roff, ridx, rval, wpack);
        const int64_t first = rjs[0] >> 1, end = (rjs[len - 1] + 1) >> 1;
        for (int64_t r = (i - 1) >> 1; r <= (i + 1) >> 1; ++r) {
          if (r * 2 - 1 <= i && i <= r * 2 + 1) {
            std::memset(mask + r * wo + first, 1, end - first + 1);
          }
        }
        continue;
      }
#endif
#ifdef __AVX512F__
      if (o == 16) {
        accumulate_run_3x3_fixed<1>(acc, wo, i + pad, pad, rjs, len, roff, ridx, rval, wpack);
      } else if (o == 32) {
        accumulate_run_3x3_fixed<2>(acc, wo, i + pad, pad, rjs, len, roff, ridx, rval, wpack);
      } else if (o == 64) {  // two chunks at a time (four would need 36 registers)
        for (int64_t h0 = 0; h0 < 4; h0 += 2) {
          accumulate_run_3x3_fixed<2, 64>(acc, wo, i + pad, pad, rjs, len, roff, ridx, rval,
                                          wpack, h0);
        }
      } else {
        accumulate_run_3x3(acc, wo, o, i + pad, pad, rjs, len, roff, ridx, rval, wpack);
      }
#else
      accumulate_run_3x3(acc, wo, o, i + pad, pad, rjs, len, roff, ridx, rval, wpack);
#endif
      const int64_t first = rjs[0] + pad - 2, end = rjs[len - 1] + pad;
      for (int64_t d = 0; d < 3; ++d) std::memset(mask + (i + pad - d) * wo + first, 1, end - first + 1);
      macs += static_cast<int64_t>(roff[len]) * taps * o;
      continue;
    }
    prefetch_rows(din, p, c);
    const int nz = nonzeros(din + p * c, c, idx, val);
    if (!nz) continue;
    if (vec && k == 3 && stride == 2 && pad == 1 && i >= 1 && (i + 1) / 2 < ho && j >= 1 &&
        (j + 1) / 2 < wo) {
      // Interior pixel of a stride-2 3×3 conv: by parity it lands on 1 or 2 output rows
      // and 1 or 2 output columns; list them directly (a 9-tap scan mispredicts on parity).
      int64_t ri[2], rt[2], ci[2], ct[2];
      const int nr = (i & 1) ? 2 : 1, nc = (j & 1) ? 2 : 1;
      if (i & 1) {
        ri[0] = (i + 1) / 2, rt[0] = 0, ri[1] = (i - 1) / 2, rt[1] = 2;
      } else {
        ri[0] = i / 2, rt[0] = 1;
      }
      if (j & 1) {
        ci[0] = (j + 1) / 2, ct[0] = 0, ci[1] = (j - 1) / 2, ct[1] = 2;
      } else {
        ci[0] = j / 2, ct[0] = 1;
      }
      int nv = 0;
      for (int a = 0; a < nr; ++a) {
        for (int b = 0; b < nc; ++b) {
          const int64_t q = ri[a] * wo + ci[b];
          vrows[nv] = acc + q * o;
          vtaps[nv++] = static_cast<int>(rt[a] * 3 + ct[b]);
          mask[q] = 1;
        }
      }
      accumulate_any(vrows, vtaps, nv, wpack, taps, o, nz, idx, val);
      macs += static_cast<int64_t>(nz) * nv * o;
      continue;
    }
    if (vec) {
      const int nv = landing_taps_any(stride, i, j, k, pad, ho, wo, o, acc, vrows, vtaps, mask);
      if (!nv) continue;
      accumulate_any(vrows, vtaps, nv, wpack, taps, o, nz, idx, val);
      macs += static_cast<int64_t>(nz) * nv * o;
      continue;
    }
    const int valid = tap_rows_any(stride, i, j, k, pad, ho, wo, o, acc, rows, outs);
    if (!valid) continue;
    accumulate_scalar(rows, taps, wt, c, o, nz, idx, val);
    macs += static_cast<int64_t>(nz) * valid * o;
    for (int64_t t = 0; t < taps; ++t) {
      if (outs[t] >= 0) mask[outs[t]] = 1;
    }
  }
  if (POST) finish_rows(ho);
  *count = n;
  return macs;
}

}  // namespace

extern "C" {
// The fused conv and epilogue (conv_impl<true>; the accumulate-only variant below differs by
// compile-time branches, so this one compiles as it did before that variant existed).
EA_CONTRACT int64_t ea_conv_post(
    const int32_t* pin, const int16_t* din, int64_t np, int64_t c, int64_t w, int64_t ho,
    int64_t wo, int64_t k, int64_t stride, int64_t pad, const float* wt, const float* wpack,
    int64_t o, float* acc, uint8_t* mask, int32_t all, const float* scale, const float* bias,
    const float* bias_map, int64_t border, const uint8_t* sck, int64_t sc_c, int64_t sc_w,
    int64_t sc_stride, int64_t sc_front, const float* scq, const float* inv_step, float kmax,
    uint8_t* kmap, int32_t* pix_out, int16_t* delta_out, int64_t* count) {
  return conv_impl<true>(pin, din, np, c, w, ho, wo, k, stride, pad, wt, wpack, o, acc, mask,
                         all, scale, bias, bias_map, border, sck, sc_c, sc_w, sc_stride,
                         sc_front, scq, inv_step, kmax, kmap, pix_out, delta_out, count);
}

// The accumulation of ea_conv_post without its epilogue: acc += conv2d(Δ) for the changed
// input pixels, and every output pixel that received something marked in `mask`. A second
// conv into the same accumulator (a ResNet block's downsample conv, on integer weights that
// share the layer's scale); the layer's ea_conv_post then finishes the marked pixels.
// Returns the MACs performed, or ea_conv_post's error codes.
EA_CONTRACT int64_t ea_conv_acc(const int32_t* pin, const int16_t* din, int64_t np, int64_t c,
                                int64_t w, int64_t ho, int64_t wo, int64_t k, int64_t stride,
                                int64_t pad, const float* wt, const float* wpack, int64_t o,
                                float* acc, uint8_t* mask) {
  int64_t unused = 0;
  return conv_impl<false>(pin, din, np, c, w, ho, wo, k, stride, pad, wt, wpack, o, acc, mask,
                          0, nullptr, nullptr, nullptr, 0, nullptr, 0, 0, 1, 0, nullptr,
                          nullptr, 255.0f, nullptr, nullptr, nullptr, &unused);
}

// Mark the output pixels a shortcut reads from its changed input pixels `pin` (those the
// shortcut's k map changed at), so that ea_conv_post re-evaluates them. stride: the
// shortcut's subsampling; (w): the input map's width; (ho, wo): the output map's size.
void ea_mark_shortcut(const int32_t* pin, int64_t np, int64_t w, int64_t stride, int64_t ho,
                      int64_t wo, uint8_t* mask) {
  if (stride == 1 && w == wo) {  // the same grid: no division
    for (int64_t p = 0; p < np; ++p) mask[pin[p]] = 1;
    return;
  }
  // RowDiv's bound: input pixels lie below row ho · stride (the shortcut subsamples them).
  const bool by_row_div = double(w) * double(w) * double((ho + 1) * stride) < double(uint64_t{1} << 40);
  const RowDiv div(w);
  for (int64_t p = 0; p < np; ++p) {
    const int64_t i = by_row_div ? div.row(pin[p]) : pin[p] / w, j = pin[p] - i * w;
    if (i % stride || j % stride || i / stride >= ho || j / stride >= wo) continue;
    mask[(i / stride) * wo + j / stride] = 1;
  }
}


}  // extern "C"

namespace {
typedef uint8_t vb16 __attribute__((vector_size(16)));

// m = the channel-wise max of the pixels [i0, i1) × [j0, j1) of `src` (H·W, C); true if it
// differs from `old`. 16 channels at a time where C allows (GCC left the plain loop scalar:
// it was most of the pool's time).
bool window_max(const uint8_t* src, int64_t w, int64_t c, int64_t i0, int64_t i1, int64_t j0,
                int64_t j1, uint8_t* m, const uint8_t* old) {
  if (c % 16) {
    std::memset(m, 0, c);
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        const uint8_t* s = src + (i * w + j) * c;
        for (int64_t ch = 0; ch < c; ++ch) m[ch] = std::max(m[ch], s[ch]);
      }
    }
    return std::memcmp(m, old, c) != 0;
  }
  vb16 moved = {};
  for (int64_t ch = 0; ch < c; ch += 16) {
    vb16 a = {}, b, o;
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        std::memcpy(&b, src + (i * w + j) * c + ch, 16);
        a = a > b ? a : b;
      }
    }
    std::memcpy(m + ch, &a, 16);
    std::memcpy(&o, old + ch, 16);
    moved |= a ^ o;
  }
  uint64_t lo, hi;
  std::memcpy(&lo, &moved, 8);
  std::memcpy(&hi, reinterpret_cast<const char*>(&moved) + 8, 8);
  return (lo | hi) != 0;
}
}  // namespace

extern "C" {
// A max pool over uint8 k maps (H·W, C) channels-last, by changes: every output pixel whose
// window holds a changed input pixel `pin` (ascending; or every pixel if `all`) takes the max
// over its window again from the (already updated) source map `src`. Windows cut by padding
// take the max over the pixels they hold (as PyTorch's -inf padding does; k >= 0, and every
// window holds one when pad <= k / 2). Output as ea_conv_post's: changed pixels ascending in
// `pix_out`, their delta rows (new - old k, int16) in `delta_out`, `kmap` updated, marks
// cleared. Returns 0 (no MACs); -1 for more than 4096 channels or pad > k / 2; -2 if `pin`
// is not ascending.
int64_t ea_maxpool_delta(const int32_t* pin, int64_t np, const uint8_t* src, int64_t h,
                         int64_t w, int64_t c, int64_t k, int64_t stride, int64_t pad,
                         int64_t ho, int64_t wo, uint8_t* mask, int32_t all, uint8_t* kmap,
                         int32_t* pix_out, int16_t* delta_out, int64_t* count) {
  *count = 0;
  if (c > kMaxChannels || stride < 1 || k < 1 || 2 * pad > k) return -1;
  int64_t rmin = all ? 0 : ho, rmax = all ? ho - 1 : -1, last = -1;
  for (int64_t p = 0; p < np; ++p) {
    if (pin[p] <= last) return -2;
    last = pin[p];
    const int64_t i = pin[p] / w, j = pin[p] - i * w;
    // Outputs r with r·stride - pad <= i <= r·stride - pad + k - 1.
    const int64_t r0 = std::max<int64_t>(0, (i + pad - k + stride) / stride);
    const int64_t r1 = std::min(ho - 1, (i + pad) / stride);
    const int64_t c0 = std::max<int64_t>(0, (j + pad - k + stride) / stride);
    const int64_t c1 = std::min(wo - 1, (j + pad) / stride);
    for (int64_t r = r0; r <= r1; ++r) {
      for (int64_t q = c0; q <= c1; ++q) mask[r * wo + q] = 1;
    }
    rmin = std::min(rmin, r0);
    rmax = std::max(rmax, r1);
  }
  alignas(64) uint8_t m[kMaxChannels];
  int64_t n = 0;
  for (int64_t r = rmin; r <= rmax; ++r) {
    const int64_t i0 = std::max<int64_t>(0, r * stride - pad);
    const int64_t i1 = std::min(h, r * stride - pad + k);
    for (int64_t q = 0; q < wo; ++q) {
      const int64_t out = r * wo + q;
      if (!all && !mask[out]) continue;
      mask[out] = 0;
      const int64_t j0 = std::max<int64_t>(0, q * stride - pad);
      const int64_t j1 = std::min(w, q * stride - pad + k);
      uint8_t* km = kmap + out * c;
      if (!window_max(src, w, c, i0, i1, j0, j1, m, km)) continue;
      int16_t* d = delta_out + n * c;
      for (int64_t ch = 0; ch < c; ++ch) d[ch] = static_cast<int16_t>(int(m[ch]) - int(km[ch]));
      std::memcpy(km, m, c);
      pix_out[n++] = static_cast<int32_t>(out);
    }
  }
  *count = n;
  return 0;
}
}  // extern "C"
