/* Tensor shape helpers and scalar float conversions (bf16/f16 <-> f32).
 * The conversions round to nearest even, as PyTorch's .to(dtype) does. */
#include <math.h>
#include <string.h>

#include "vllmd/tensor.h"

static uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

float vd_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t vd_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);

	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float vd_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;

	if (exp == 0) {
		/* zero or subnormal: value = man * 2^-24 */
		float v = (float)man * (1.0f / 16777216.0f);
		return sign ? -v : v;
	}
	if (exp == 31)
		return bits_f32(sign | 0x7f800000u | (man << 13));
	return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t vd_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;

	if (a > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u);
	if (a >= 0x477ff000u) /* rounds to >= 65520: infinity */
		return (uint16_t)(sign | 0x7c00u);
	if (a < 0x38800000u) {
		/* result is subnormal or zero: round a * 2^24 to nearest even */
		float v = bits_f32(a) * 16777216.0f;
		uint32_t m = (uint32_t)v;
		float r = v - (float)m;

		if (r > 0.5f || (r == 0.5f && (m & 1u)))
			m++;
		return (uint16_t)(sign | m);
	}
	a += ((a >> 13) & 1u) + 0xfffu; /* round mantissa to 10 bits, even */
	return (uint16_t)(sign | (((a >> 23) - 112u) << 10) | ((a >> 13) & 0x3ffu));
}

/* E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa bits; exponent 0 holds
 * subnormals m * 2^-9; S.1111.111 is NaN, so the largest finite is 448. */
float vd_fp8e4m3_to_f32(uint8_t b)
{
	uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
	float v;

	if (e == 15 && m == 7)
		return NAN;
	v = e == 0 ? (float)m * 0x1p-9f : ldexpf(1.0f + (float)m * 0.125f, (int)e - 7);
	return b & 0x80 ? -v : v;
}

uint8_t vd_f32_to_fp8e4m3(float f)
{
	uint32_t u = f32_bits(f);
	uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
	uint32_t a = u & 0x7fffffffu, e, m, rest, half, shift;
	int32_t exp;

	if (a > 0x7f800000u)
		return 0x7f;
	if (a > 0x43e80000u) /* above 464 = 448 + half an ulp: saturate */
		return (uint8_t)(sign | 0x7e);
	exp = (int32_t)(a >> 23) - 127;
	if (exp < -10) /* below 2^-10, half the smallest subnormal: zero */
		return sign;
	if (exp >= -6) {
		/* normal: keep 3 mantissa bits, round the 20 below to nearest even;
		 * a carry out of the mantissa moves into the exponent, as it should */
		e = (uint32_t)(exp + 7);
		m = (a >> 20) & 7u;
		rest = a & 0xfffffu;
		half = 0x80000u;
		e = (e << 3) | m;
		if (rest > half || (rest == half && (m & 1u)))
			e++;
		return (uint8_t)(sign | e);
	}
	/* subnormal: the value in units of 2^-9 is mant * 2^(exp - 14) */
	m = (a & 0x7fffffu) | 0x800000u;
	shift = (uint32_t)(14 - exp); /* 21 .. 24 */
	e = m >> shift;
	rest = m & ((1u << shift) - 1u);
	half = 1u << (shift - 1);
	if (rest > half || (rest == half && (e & 1u)))
		e++;
	return (uint8_t)(sign | e);
}
