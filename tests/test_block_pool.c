/* Block pool: the null block, allocation from the free-list head, frees
 * appended in the given order (eviction order), touch of cached free
 * blocks, lookup, eviction of cached blocks on reuse, double frees. */
#include <check.h>
#include <string.h>

#include "core/block_pool.h"

static vd_block_hash H(int v)
{
	vd_block_hash h;

	memset(&h, 0, sizeof(h));
	memcpy(h.b, &v, sizeof(v));
	h.b[15] = (uint8_t)(v * 7 + 1);
	return h;
}

START_TEST(test_alloc_and_null_block)
{
	vd_block_pool *p;
	int32_t b[8];

	ck_assert_int_eq(vd_block_pool_create(8, true, &p), VD_OK);
	ck_assert_int_eq(vd_block_pool_num_free(p), 7);
	ck_assert_int_eq(vd_block_pool_alloc(p, 7, b), VD_OK);
	for (int i = 0; i < 7; i++) {
		ck_assert_int_eq(b[i], i + 1); /* head first; block 0 never given */
		ck_assert_int_eq(vd_block_pool_ref(p, b[i]), 1);
	}
	ck_assert_int_eq(vd_block_pool_num_free(p), 0);
	ck_assert_int_eq(vd_block_pool_alloc(p, 1, b), VD_ERR_LIMIT);
	ck_assert(vd_block_pool_usage(p) == 1.0);
	vd_block_pool_destroy(p);
	ck_assert_int_eq(vd_block_pool_create(1, true, &p), VD_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_free_order_is_eviction_order)
{
	vd_block_pool *p;
	int32_t b[6], order[8], tail_first[3];

	ck_assert_int_eq(vd_block_pool_create(7, true, &p), VD_OK);
	ck_assert_int_eq(vd_block_pool_alloc(p, 6, b), VD_OK);
	/* a sequence owning b0 b1 b2 frees last block first */
	tail_first[0] = b[2];
	tail_first[1] = b[1];
	tail_first[2] = b[0];
	vd_block_pool_free(p, tail_first, 3);
	vd_block_pool_free(p, &b[4], 1);
	ck_assert_int_eq(vd_block_pool_free_order(p, order, 8), 4);
	ck_assert_int_eq(order[0], b[2]);
	ck_assert_int_eq(order[1], b[1]);
	ck_assert_int_eq(order[2], b[0]);
	ck_assert_int_eq(order[3], b[4]);
	/* double free and the null block are ignored */
	vd_block_pool_free(p, &b[4], 1);
	vd_block_pool_free(p, (int32_t[]){ 0 }, 1);
	ck_assert_int_eq(vd_block_pool_num_free(p), 4);
	vd_block_pool_destroy(p);
}
END_TEST

START_TEST(test_prefix_cache_touch_and_evict)
{
	vd_block_pool *p;
	int32_t b[4], x[4], order[8];
	vd_block_hash h1 = H(1), h2 = H(2);

	ck_assert_int_eq(vd_block_pool_create(5, true, &p), VD_OK);
	ck_assert_int_eq(vd_block_pool_alloc(p, 2, b), VD_OK);
	vd_block_pool_cache(p, b[0], &h1);
	vd_block_pool_cache(p, b[1], &h2);
	ck_assert_int_eq(vd_block_pool_lookup(p, &h1), b[0]);
	/* a second block with the same content is not cached twice */
	ck_assert_int_eq(vd_block_pool_alloc(p, 1, x), VD_OK);
	vd_block_pool_cache(p, x[0], &h1);
	ck_assert(!vd_block_pool_is_cached(p, x[0]));
	vd_block_pool_free(p, x, 1);
	/* freed cached blocks stay findable */
	vd_block_pool_free(p, (int32_t[]){ b[1], b[0] }, 2);
	ck_assert_int_eq(vd_block_pool_lookup(p, &h1), b[0]);
	ck_assert_int_eq(vd_block_pool_ref(p, b[0]), 0);
	/* a hit takes it out of the free list */
	vd_block_pool_touch(p, &b[0], 1);
	ck_assert_int_eq(vd_block_pool_ref(p, b[0]), 1);
	ck_assert_int_eq(vd_block_pool_num_free(p), 3);
	ck_assert_int_eq(vd_block_pool_free_order(p, order, 8), 3);
	for (int i = 0; i < 3; i++)
		ck_assert_int_ne(order[i], b[0]);
	/* allocating everything free evicts cached b[1] from the map */
	ck_assert_int_eq(vd_block_pool_alloc(p, 3, x), VD_OK);
	ck_assert_int_eq(vd_block_pool_lookup(p, &h2), -1);
	ck_assert_int_eq(vd_block_pool_lookup(p, &h1), b[0]);
	vd_block_pool_destroy(p);
}
END_TEST

START_TEST(test_map_under_churn)
{
	/* many inserts and evictions keep every cached hash findable */
	vd_block_pool *p;
	int32_t b[64];

	ck_assert_int_eq(vd_block_pool_create(65, true, &p), VD_OK);
	for (int round = 0; round < 20; round++) {
		ck_assert_int_eq(vd_block_pool_alloc(p, 64, b), VD_OK);
		for (int i = 0; i < 64; i++) {
			vd_block_hash h = H(round * 1000 + i);

			vd_block_pool_cache(p, b[i], &h);
		}
		for (int i = 0; i < 64; i++) {
			vd_block_hash h = H(round * 1000 + i);

			ck_assert_int_eq(vd_block_pool_lookup(p, &h), b[i]);
		}
		for (int i = 63; i >= 0; i--)
			vd_block_pool_free(p, &b[i], 1);
	}
	vd_block_pool_destroy(p);
}
END_TEST

START_TEST(test_caching_disabled)
{
	vd_block_pool *p;
	int32_t b[2];
	vd_block_hash h = H(5);

	ck_assert_int_eq(vd_block_pool_create(4, false, &p), VD_OK);
	ck_assert_int_eq(vd_block_pool_alloc(p, 1, b), VD_OK);
	vd_block_pool_cache(p, b[0], &h);
	ck_assert_int_eq(vd_block_pool_lookup(p, &h), -1);
	vd_block_pool_destroy(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_pool");
	TCase *tc = tcase_create("pool");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_alloc_and_null_block);
	tcase_add_test(tc, test_free_order_is_eviction_order);
	tcase_add_test(tc, test_prefix_cache_touch_and_evict);
	tcase_add_test(tc, test_map_under_churn);
	tcase_add_test(tc, test_caching_disabled);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
