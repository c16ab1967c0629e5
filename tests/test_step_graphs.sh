#!/usr/bin/env bash
# The engine's side of step graphs on the CPU: with VD_CPU_STEP_GRAPHS=1 the
# CPU backend accepts graph_begin/graph_end (it runs each "recorded" step as
# its ops come), so every decode-only step is laid out as a padded graph
# batch: positions rows of the graph's size (three for Qwen2-VL's M-RoPE),
# block tables of the graph's width, padding rows of the null block. The
# family golden tests must still match transformers. (test_llava checks
# graphs against op by op itself; on a GPU the same tests run real graphs.)
set -u
B=${VD_BUILDDIR:-.}
rc=0
for t in test_qwen2vl test_phi3v test_engine; do
	if VD_CPU_STEP_GRAPHS=1 "$B/tests/$t" >"$t.graphs.log" 2>&1; then
		echo "ok - $t with padded graph batches"
	else
		echo "not ok - $t with padded graph batches"
		tail -20 "$t.graphs.log"
		rc=1
	fi
	rm -f "$t.graphs.log"
done
exit $rc
