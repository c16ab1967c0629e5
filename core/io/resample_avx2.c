/* AVX2 twins of the resampling kernels (resample_kernels.h). They compute
 * Pillow's int32 sums exactly, so they return the C kernels' bytes:
 *   horizontal: a 22-bit weight k is split into 16-bit halves, k = hi * 2^16
 *     + lo with lo signed, and pmaddwd sums pixel * half over two taps per
 *     int32 lane; hi * 2^16 + lo is then the true sum modulo 2^32, and the
 *     true sum fits in int32 (as Pillow's accumulator requires).
 *   vertical: whole rows times one weight with pmulld, eight at a time.
 * Compiled for AVX2 function by function, chosen at run time. */
#include <stdlib.h>
#include <string.h>

#include "core/io/resample_kernels.h"

#if VD_RESAMPLE_HAVE_AVX2
#include <immintrin.h>

#define VD_AVX2 __attribute__((target("avx2")))

bool vd_resample_cpu_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
}

/* Per output, per group of taps 4g..4g+3, two vectors of 16 int16: the low
 * halves then the high halves, lane 0 for taps 4g, 4g+1 and lane 1 for taps
 * 4g+2, 4g+3, each as (t0, t1) repeated for R, G, B, then (0, 0). */
bool vd_weights_pack_avx2(vd_weights *w)
{
	w->groups = (w->ksize + 3) / 4;
	w->k16 = calloc((size_t)w->n * (size_t)w->groups * 32, sizeof(int16_t));
	if (!w->k16)
		return false;
	for (int i = 0; i < w->n; i++) {
		const int32_t *k = &w->k[(size_t)i * w->ksize];
		int taps = w->bounds[(size_t)i * 2 + 1];

		for (int t = 0; t < taps; t++) {
			int16_t lo = (int16_t)(uint16_t)((uint32_t)k[t] & 0xffffu);
			int16_t hi = (int16_t)(((int64_t)k[t] - lo) / 65536);
			int g = t / 4, lane = (t % 4) / 2, odd = t % 2;
			int16_t *v = w->k16 + ((size_t)i * w->groups + (size_t)g) * 32;

			for (int c = 0; c < 3; c++) {
				v[lane * 8 + c * 2 + odd] = lo;
				v[16 + lane * 8 + c * 2 + odd] = hi;
			}
		}
	}
	return true;
}

VD_AVX2 void vd_hrow_avx2(const uint8_t *src, uint8_t *dst, const vd_weights *w)
{
	/* Bytes of pixels t0, t1 (lane 0) and t2, t3 (lane 1) of a 16-byte
	 * load, as int16 in the order R0 R1 G0 G1 B0 B1 0 0. */
	const __m256i shuf = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1,
					      -1, -1, 6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1,
					      -1, -1, -1, -1);
	const __m128i half = _mm_set1_epi32(1 << (VD_PRECISION_BITS - 1));

	for (int xx = 0; xx < w->n; xx++) {
		const uint8_t *p = src + (size_t)w->bounds[(size_t)xx * 2] * 3;
		int groups = (w->bounds[(size_t)xx * 2 + 1] + 3) / 4;
		const int16_t *kv = w->k16 + (size_t)xx * w->groups * 32;
		__m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
		__m128i s;
		uint32_t v;

		for (int g = 0; g < groups; g++) {
			__m256i px = _mm256_broadcastsi128_si256(
				_mm_loadu_si128((const __m128i *)(p + (size_t)g * 12)));

			px = _mm256_shuffle_epi8(px, shuf);
			lo = _mm256_add_epi32(lo, _mm256_madd_epi16(
				px, _mm256_loadu_si256((const __m256i *)(kv + (size_t)g * 32))));
			hi = _mm256_add_epi32(hi, _mm256_madd_epi16(
				px, _mm256_loadu_si256((const __m256i *)(kv + (size_t)g * 32 + 16))));
		}
		lo = _mm256_add_epi32(_mm256_slli_epi32(hi, 16), lo);
		s = _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
		s = _mm_srai_epi32(_mm_add_epi32(s, half), VD_PRECISION_BITS);
		s = _mm_packus_epi16(_mm_packs_epi32(s, s), s);
		v = (uint32_t)_mm_cvtsi128_si32(s);
		memcpy(dst + (size_t)xx * 3, &v, 3);
	}
}

VD_AVX2 void vd_vrow_avx2(const uint8_t *const *rows, const int32_t *k, int taps, size_t n,
			  int32_t *acc, uint8_t *dst)
{
	const __m256i half = _mm256_set1_epi32(1 << (VD_PRECISION_BITS - 1));
	size_t n8 = n / 8 * 8, i;

	for (i = 0; i < n8; i += 8)
		_mm256_storeu_si256((__m256i *)(acc + i), half);
	for (int t = 0; t < taps; t++) {
		const uint8_t *src = rows[t];
		__m256i kv = _mm256_set1_epi32(k[t]);

		for (i = 0; i < n8; i += 8) {
			__m256i px = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + i)));
			__m256i a = _mm256_loadu_si256((const __m256i *)(acc + i));

			a = _mm256_add_epi32(a, _mm256_mullo_epi32(px, kv));
			_mm256_storeu_si256((__m256i *)(acc + i), a);
		}
	}
	for (i = 0; i < n8; i += 8) {
		__m256i a = _mm256_srai_epi32(_mm256_loadu_si256((const __m256i *)(acc + i)),
					      VD_PRECISION_BITS);
		__m128i s = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));

		_mm_storel_epi64((__m128i *)(dst + i), _mm_packus_epi16(s, s));
	}
	for (i = n8; i < n; i++) {
		int32_t sum = 1 << (VD_PRECISION_BITS - 1);

		for (int t = 0; t < taps; t++)
			sum += rows[t][i] * k[t];
		dst[i] = vd_clip8(sum);
	}
}
#endif
